"""The comparison table, as Markdown and LaTeX: mean ± std over seeds, the best value of each column in bold.

Columns come from ``bench.metrics.SUMMARY``. "Best" is taken among the continual-learning methods only: the
references (roles ``lower-reference`` and ``upper-reference``: frozen, joint) are shown but never bolded, as
in the paper's table; a metric without a direction (training time) is never bolded. Means are compared at
the precision they are printed with, so ties are bolded alike.
"""
from __future__ import annotations

from ..method_spec import REFERENCES
from ..metrics import Metric
from .records import roles_of, untuned_rows
from .summary import aggregate, metrics_of

UNTUNED = "†"


def untuned_note(runs: list[dict]) -> str:
    """The line that explains the mark of rows run at their defaults beside tuned ones ('' when none)."""
    methods = sorted({r["method"] for r in runs if r["config"].get("tuned") is False})
    return (f"{UNTUNED} untuned: the stream has tuned settings but none for this method, which ran at its "
            f"defaults (python -m bench.tune --methods {','.join(methods)})." if methods else "")


def note(cols: tuple[Metric, ...]) -> str:
    unit = {"ratio": "a ratio", "s": "seconds"}
    other = [f"{m.title} ({unit.get(m.unit, m.unit)}"
             + {False: ", lower is better", None: ", not ranked"}.get(m.higher, "") + ")"
             for m in cols if m.unit != "%"]
    return ("Percent, except " + " and ".join(other) + ". Best continual-learning method per column in bold; "
            "frozen (zero-shot) and joint (sees old data) are references. Definitions: docs/protocol.md.")


def best(runs: list[dict]) -> dict[str, set[str]]:
    """metric key -> rows holding the best printed mean among non-reference methods."""
    agg, roles = aggregate(runs), roles_of(runs)
    out: dict[str, set[str]] = {}
    for m in metrics_of(runs):
        cands = {name: round(mean, m.decimals) for name, v in agg.items()
                 if (mean := v[m.key][0]) is not None and roles[name] not in REFERENCES}
        if m.higher is None or not cands:
            out[m.key] = set()
            continue
        target = max(cands.values()) if m.higher else min(cands.values())
        out[m.key] = {name for name, v in cands.items() if v == target}
    return out


def _cells(runs, bold_fmt, pm):
    agg, bests, cols = aggregate(runs), best(runs), metrics_of(runs)
    rows = []
    for name, vals in agg.items():
        n = max(c for _, _, c in vals.values())
        cells = []
        for m in cols:
            mean, std, _ = vals[m.key]
            if mean is None:
                cells.append("–")
                continue
            text = f"{mean:.{m.decimals}f}"
            cells.append((bold_fmt(text) if name in bests[m.key] else text) + f"{pm}{std:.{m.decimals}f}")
        rows.append((name, n, cells))
    return rows


def table_md(runs: list[dict], stream: str) -> str:
    seeds = sorted({r["seed"] for r in runs})
    cols = metrics_of(runs)
    lines = [f"# {stream}: mean ± std over seeds {', '.join(map(str, seeds))}", "", note(cols), "",
             "| method | seeds | " + " | ".join(m.title for m in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    marked = untuned_rows(runs)
    for name, n, cells in _cells(runs, lambda s: f"**{s}**", " ± "):
        lines.append(f"| {name}{f' {UNTUNED}' if name in marked else ''} | {n} | " + " | ".join(cells) + " |")
    if untuned_note(runs):
        lines += ["", untuned_note(runs)]
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def table_tex(runs: list[dict], stream: str) -> str:
    seeds = sorted({r["seed"] for r in runs})
    cols = metrics_of(runs)
    head = " & ".join(["Method"] + [_tex_escape(m.title) for m in cols]) + r" \\"
    lines = [f"% {stream}: mean $\\pm$ std over seeds {', '.join(map(str, seeds))}. {_tex_escape(note(cols))}",
             r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule", head, r"\midrule"]
    roles, prev, marked = roles_of(runs), None, untuned_rows(runs)
    for name, _, cells in _cells(runs, lambda s: rf"\textbf{{{s}}}", r"$\pm$"):
        # one group for the references below, one for naive + baselines, one for proposed, one above
        group = {"naive": "baseline"}.get(roles[name], roles[name])
        if prev is not None and group != prev:
            lines.append(r"\midrule")
        prev = group
        mark = r"$^\dagger$" if name in marked else ""
        lines.append(" & ".join([_tex_escape(name) + mark] + [c.replace("–", "--") for c in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if marked:
        lines.append("% " + _tex_escape(untuned_note(runs)).replace(UNTUNED, r"$^\dagger$"))
    return "\n".join(lines) + "\n"
