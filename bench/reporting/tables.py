"""The comparison table, as Markdown and LaTeX: per row and column the mean over runs ± the half-width of
its 95 % interval, bold only where the best is separated from the rest, marks against the reference.

Columns come from ``bench.metrics.SUMMARY``; the statistics and the rules for bold and marks from
``compare.py``. The references (roles ``lower-reference`` and ``upper-reference``: frozen, joint) are shown
but never bolded or marked, as in the paper's table.
"""
from __future__ import annotations

from ..metrics import Metric
from .compare import BETTER, WORSE, Comparison
from .records import roles_of, run_key, untuned_rows
from .summary import metrics_of

UNTUNED = "†"


def untuned_note(runs: list[dict]) -> str:
    """The line that explains the mark of rows run at their defaults beside tuned ones ('' when none)."""
    methods = sorted({r["method"] for r in runs if r["config"].get("tuned") is False})
    return (f"{UNTUNED} untuned: the stream has tuned settings but none for this method, which ran at its "
            f"defaults (python -m bench.tune --methods {','.join(methods)})." if methods else "")


def note(cols: tuple[Metric, ...], comparison: Comparison) -> str:
    unit = {"ratio": "a ratio", "s": "seconds", "MiB": "MiB", "count": "a count"}
    other = [f"{m.title} ({unit.get(m.unit, m.unit)}"
             + {False: ", lower is better", None: ", not ranked"}.get(m.higher, "") + ")"
             for m in cols if m.unit != "%"]
    ref = comparison.reference
    marks = (f"{BETTER} / {WORSE}: better / worse than {ref}, the paired interval (same seed, order and world) "
             "excluding 0. " if ref else "No naive method in the table: no row is marked against a reference. ")
    return ("Percent, except " + " and ".join(other) + ". Mean over runs ± the half-width of its 95 % "
            "interval (Student t, stratified by task order × world): each row's own uncertainty, not a test "
            "of a difference. Bold: the best continual-learning method of a column, only where its paired "
            "interval against every other one excludes 0 (no bold: not separated). " + marks
            + "Frozen (zero-shot) and joint (sees old data) are references. Definitions: docs/protocol.md.")


def _cells(comparison: Comparison, bold_fmt, pm, marks):
    bolds = {m.key: comparison.bold(m) for m in comparison.metrics}
    rows = []
    for name in comparison.rows:
        n = max((comparison.estimate(name, m.key).n for m in comparison.metrics), default=0)
        cells = []
        for m in comparison.metrics:
            e = comparison.estimate(name, m.key)
            if e.mean is None:
                cells.append("–")
                continue
            text = f"{e.mean:.{m.decimals}f}"
            text = bold_fmt(text) if bolds[m.key] == name else text
            half = "" if e.half is None else f"{pm}{e.half:.{m.decimals}f}"
            cells.append(text + half + marks.get(comparison.mark(name, m), ""))
        rows.append((name, n, cells))
    return rows


def runs_caption(runs: list[dict]) -> str:
    """What the runs of a table vary: its seeds, and its task orders and worlds when there are several."""
    keys = {run_key(r) for r in runs}
    parts = [f"seeds {', '.join(map(str, sorted({k[0] for k in keys})))}"]
    for i, what in ((1, "task orders"), (2, "worlds")):
        vals = sorted({k[i] for k in keys})
        if vals != [0]:
            parts.append(f"{what} {', '.join(map(str, vals))}")
    return "; ".join(parts)


def table_md(runs: list[dict], stream: str, reference: str | None = None) -> str:
    cols = metrics_of(runs)
    comparison = Comparison(runs, cols, reference)
    lines = [f"# {stream}: mean ± 95 % interval over runs ({runs_caption(runs)})", "", note(cols, comparison), "",
             "| method | runs | " + " | ".join(m.title for m in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    marked = untuned_rows(runs)
    marks = {BETTER: f" {BETTER}", WORSE: f" {WORSE}"}
    for name, n, cells in _cells(comparison, lambda s: f"**{s}**", " ± ", marks):
        lines.append(f"| {name}{f' {UNTUNED}' if name in marked else ''} | {n} | " + " | ".join(cells) + " |")
    if untuned_note(runs):
        lines += ["", untuned_note(runs)]
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def table_tex(runs: list[dict], stream: str, reference: str | None = None) -> str:
    cols = metrics_of(runs)
    comparison = Comparison(runs, cols, reference)
    head = " & ".join(["Method"] + [_tex_escape(m.title) for m in cols]) + r" \\"
    text = note(cols, comparison).replace(BETTER, "up-triangle").replace(WORSE, "down-triangle")
    lines = [f"% {stream}: mean $\\pm$ 95 % interval over runs ({runs_caption(runs)}). {_tex_escape(text)}",
             "% the marks need \\usepackage{amssymb}",
             r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule", head, r"\midrule"]
    roles, prev, marked = roles_of(runs), None, untuned_rows(runs)
    marks = {BETTER: r"$^{\blacktriangle}$", WORSE: r"$^{\blacktriangledown}$"}
    for name, _, cells in _cells(comparison, lambda s: rf"\textbf{{{s}}}", r"$\pm$", marks):
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
