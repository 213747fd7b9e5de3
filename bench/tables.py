"""The comparison table, as Markdown and LaTeX: mean ± std over seeds, the best value of each column in bold.

"Best" is taken among the continual-learning methods only: the references (``frozen`` below, ``joint``
above, whose recorded ``order`` is < 5 or >= 30) are shown but never bolded, as in the paper's table.
Means are compared at the precision they are printed with, so ties are bolded alike.
"""
from __future__ import annotations

from .results import aggregate, method_orders

# (summary key, column title, higher is better, decimals); the paper's six columns first
COLUMNS = (("acc", "Acc", True, 2), ("bwt_acc", "BWT_A", True, 2), ("r1", "R@1", True, 2),
           ("r5", "R@5", True, 2), ("r10", "R@10", True, 2), ("bwt_r10", "BWT_R10", True, 2),
           ("fwt_r10", "FWT_R10", True, 2), ("forgetting_r10", "Forget_R10", False, 2),
           ("plasticity_r10", "Plast_R10", True, 2), ("stability_dev", "AlignDev", False, 4),
           ("train_seconds", "Train s", False, 1))
EMERGENT_COLUMNS = (("emergent_r10", "Emergent_R10", True, 2), ("emergent_gain_r10", "EmergGain_R10", True, 2))
NOTE = ("Percent, except AlignDev (mean relative deviation of old tasks' alignment scores after the last step; "
        "lower is more stable) and Train s (training seconds per run). Best continual-learning method per "
        "column in bold; frozen (zero-shot) and joint (sees old data) are references.")


def columns(runs: list[dict]) -> tuple:
    """The paper's columns and ours; with probes (pairs never trained together) their emergent R@10 too."""
    return COLUMNS + tuple(c for c in EMERGENT_COLUMNS if any(c[0] in r["summary"] for r in runs))


def _is_reference(order: int) -> bool:
    return order < 5 or order >= 30


def best(runs: list[dict]) -> dict[str, set[str]]:
    """column key -> methods holding the best printed mean among non-reference methods."""
    agg, orders = aggregate(runs), method_orders(runs)
    out = {}
    for key, _, higher, dec in columns(runs):
        cands = {m: round(v[key][0], dec) for m, v in agg.items()
                 if v[key][0] is not None and not _is_reference(orders[m])}
        if not cands:
            out[key] = set()
            continue
        target = max(cands.values()) if higher else min(cands.values())
        out[key] = {m for m, v in cands.items() if v == target}
    return out


def _cells(runs, bold_fmt, pm):
    agg, bests = aggregate(runs), best(runs)
    rows = []
    for m, vals in agg.items():
        n = max(c for _, _, c in vals.values())
        cells = []
        for key, _, _, dec in columns(runs):
            mean, std, _ = vals[key]
            if mean is None:
                cells.append("–")
                continue
            text = f"{mean:.{dec}f}"
            cells.append((bold_fmt(text) if m in bests[key] else text) + f"{pm}{std:.{dec}f}")
        rows.append((m, n, cells))
    return rows


def table_md(runs: list[dict], stream: str) -> str:
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"# {stream}: mean ± std over seeds {', '.join(map(str, seeds))}", "", NOTE, "",
             "| method | seeds | " + " | ".join(c[1] for c in columns(runs)) + " |",
             "|---|---|" + "---|" * len(columns(runs))]
    for m, n, cells in _cells(runs, lambda s: f"**{s}**", " ± "):
        lines.append(f"| {m} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def table_tex(runs: list[dict], stream: str) -> str:
    seeds = sorted({r["seed"] for r in runs})
    cols = columns(runs)
    head = " & ".join(["Method"] + [_tex_escape(c[1]) for c in cols]) + r" \\"
    lines = [f"% {stream}: mean $\\pm$ std over seeds {', '.join(map(str, seeds))}. {_tex_escape(NOTE)}",
             r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule", head, r"\midrule"]
    orders, prev = method_orders(runs), None
    for m, _, cells in _cells(runs, lambda s: rf"\textbf{{{s}}}", r"$\pm$"):
        group = orders[m] // 10
        if prev is not None and group != prev:
            lines.append(r"\midrule")
        prev = group
        lines.append(" & ".join([_tex_escape(m)] + [c.replace("–", "--") for c in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
