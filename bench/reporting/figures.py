"""The comparison figures of one stream's runs, drawn from run records alone (matplotlib, Agg backend).

Sized for a paper (``PAGE`` or ``COLUMN`` inches wide, fonts of 6–9 pt at that size) and built to stay
legible with 25 methods: dot plots and methods × tasks heatmaps instead of grouped bars, one small panel per
method family (the family in colour, every other method in grey behind it) instead of one tangle of lines,
labels placed beside their points without overlap, legends outside the data, axes zoomed on the
continual-learning methods with references that fall far outside marked at the edge. Each method keeps its
colour and marker everywhere (``style.py``). Units are the table's: percent, alignment deviation as a ratio,
seconds.

Imports neither torch nor avalanche, so a results folder copied anywhere can be re-plotted in seconds.
Every figure is written as PNG and PDF, each atomically.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
from pathlib import Path

from ..files import atomic_path, die_with_parent
from ..method_spec import FAMILIES
from ..metrics import BY_KEY
from .compare import Comparison, estimate
from .layout import place_labels, spread, zoom
from .records import label, row_order, run_key
from .style import PALETTES, styles
from .summary import aggregate, metrics_of

PAGE, COLUMN = 7.0, 3.5        # inches: a two-column paper's text width and column width
DPI = 150
GREY = "#c8c8c8"
HEATMAP_PANELS = 9             # methods per heatmap page (3 × 3: a full page)
SUMMARY_MIN_SPAN = 5.0         # percentage points: the narrowest axis of a summary panel
FOREST = ("r10", "bwt_r10", "acc")   # the forest plot's panels: retrieval, its stability, zero-shot accuracy

# file stem (PNG and PDF), title and what it shows: the report's captions
FIGURES = (
    ("summary", "Summary", "final R@10 and zero-shot Acc with their backward transfer; the mean over runs and "
     "its 95 % interval, the table's (dots and bars; each method's own interval, not a test of a difference); every axis "
     "spans at least 5 points; the dotted line is the naive baseline; a reference far outside the axis is "
     "marked at its edge."),
    ("forest", "Paired differences from the reference",
     "for R@10, BWT on R@10 and Acc: each method minus the reference row (--compare; the naive method by "
     "default) over runs paired by seed, task order and world, with the 95 % stratified t interval of the mean "
     "difference; a filled marker where the interval excludes 0 (the table's ▲ / ▼)."),
    ("stability_plasticity", "Stability–plasticity plane",
     "BWT on R@10 (x; right = less forgetting) against plasticity (y; R@10 right after each task is learned), "
     "mean ± std over runs."),
    ("curve_r10_seen", "Average R@10 over the tasks seen so far",
     "after each step; one panel per method family (in colour, ± std shaded), the other methods in grey, the "
     "naive baseline and the references dashed."),
    ("final_r10_by_task", "Final R@10 per task",
     "methods × tasks, grouped by modality pair: the value is the final R@10; the colour its difference from the "
     "median continual-learning method on that task (which pairs each method keeps or forgets)."),
    ("align_dev", "Alignment-score deviation of old tasks",
     "‖A_{j;t} − A_{j;j}‖_F / ‖A_{j;j}‖_F (a ratio, as in the table) averaged over the tasks learned before step t: "
     "the paper's stability quantity; panels as above."),
    ("loss_curves", "Training loss",
     "the InfoNCE of the training batches, mean per epoch, epoch after epoch of every step (the loss each method "
     "optimises adds its own terms; both are in the run files); panels as above."),
    ("stability_gap", "Stability gap: old tasks inside each step",
     "the mean R@10 of the tasks learned before a step, evaluated every N iterations inside it (--eval-every), minus "
     "its value before the step: x from t−1 to t is step t's training; a dip that recovers by the step's end is "
     "invisible to BWT (De Lange et al., ICLR 2023); runs with --eval-every only; panels as above."),
    ("train_time", "Training time per run",
     "seconds, log scale: median and range over runs, as timed in this sweep on shared cores (no ratios are "
     "drawn: `benchmarks/method_cost.py` measures cost ratios from paired, repeated timings)."),
)


def _nanmean(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _nanstd(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def _median(vals):
    vals = sorted(vals)
    n = len(vals)
    return math.nan if not n else (vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2)


def mean_matrix(runs: list[dict], key: str) -> list[list[float]]:
    """Element-wise mean over runs; NaN where undefined."""
    mats = [r["matrices"][key] for r in runs]
    return [[_nanmean([m[i][j] for m in mats]) for j in range(len(mats[0][0]))] for i in range(len(mats[0]))]


def seen_average(matrix: list[list[float | None]]) -> list[float]:
    """After each step t = 1..T: mean of the defined entries R[t][j] over the tasks seen so far (j < t)."""
    return [_nanmean([matrix[t][j] for j in range(t)]) for t in range(1, len(matrix))]


def old_tasks_average(matrix: list[list[float | None]]) -> list[float]:
    """After each step t = 2..T: mean over the tasks learned before step t (j < t−1) — the old tasks."""
    return [_nanmean([matrix[t][j] for j in range(t - 1)]) for t in range(2, len(matrix))]


def _wrap_pair(pair: str) -> str:
    """A long pair name on two lines (it heads a narrow column)."""
    return pair.replace("–", "–\n", 1) if len(pair) > 11 else pair


def short_task(task: dict) -> str:
    """``esc50 text–audio`` for the task named ``esc50:text-audio``."""
    return f"{task['source']} {'–'.join(task['modalities'])}"


def figure_order(runs: list[dict]) -> list[str]:
    """Row order of the figures: the lower reference and the naive baseline, then the families in
    ``FAMILIES`` order (so a family's shades sit together), then the upper reference; table order within."""
    st = styles(runs)
    table = row_order(runs)
    roles = {label(r): r["role"] for r in runs}

    def key(m):
        if roles[m] == "lower-reference":
            return (0, 0)
        if roles[m] == "upper-reference":
            return (2, 0)
        return (1, FAMILIES.index(st[m].family))
    return sorted(table, key=lambda m: (key(m), table.index(m)))


class Plotter:
    def __init__(self, runs: list[dict], fig_dir: Path, stream: str, reference: str | None = None):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        self.mpl, self.plt, self.runs, self.dir, self.stream = matplotlib, plt, runs, fig_dir, stream
        self.methods = figure_order(runs)
        self.by_method = {m: [r for r in runs if label(r) == m] for m in self.methods}
        # figures step by step or task by task read the runs in the stream file's own order (order 0): a
        # matrix's row t and column j mean another step and task in another order
        first = min(run_key(r)[1] for r in runs)      # 0, unless a subset left the file's order out
        self.in_order = {m: [r for r in rs if run_key(r)[1] == first] for m, rs in self.by_method.items()}
        self.orders = len({run_key(r)[1] for r in runs})
        self.tasks = next(r for r in runs if run_key(r)[1] == first)["tasks"]
        self.order_note = " (runs in the stream file's task order)" if self.orders > 1 else ""
        self.style = styles(runs)
        self.color = {m: s.color for m, s in self.style.items()}
        self.marker = {m: s.marker for m, s in self.style.items()}
        self.refs = [m for m in self.methods if self.style[m].reference]
        self.compared = [m for m in self.methods if m not in self.refs]   # the zooms are taken on these
        self.naive = [m for m in self.compared if self.style[m].family == "naive"]
        self.agg = aggregate(runs)
        self.comparison = Comparison(runs, tuple(BY_KEY[k] for k in FOREST if k in {m.key for m in metrics_of(runs)}),
                                     reference)

    # ------------------------------------------------------------------ helpers
    def figure(self, w, h, **kw):
        return self.plt.subplots(figsize=(w, h), dpi=DPI, **kw)

    def save(self, fig, name: str, tight: bool = True):
        """PNG and PDF, each written under a temporary name and renamed. ``tight`` crops to the drawn
        artists."""
        # one tight box for both formats (savefig's "tight" would lay the figure out again for each)
        box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.03) if tight else None
        for ext in ("png", "pdf"):
            with atomic_path(self.dir / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, dpi=DPI, bbox_inches=box)
        self.plt.close(fig)

    def title(self, fig, text):
        fig.suptitle(f"{self.stream}: {text}", fontsize=9, y=0.995, va="top")

    def edge_marks(self, ax, items, axis: str):
        """References whose value lies outside the zoomed axis: a triangle at the edge and the value.
        ``items``: (method, value, position on the other axis)."""
        lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
        for m, v, other in items:
            if v is None or math.isnan(v) or lo <= v <= hi:
                continue
            edge, below = (lo, True) if v < lo else (hi, False)
            if axis == "x":
                ax.plot([edge], [other], marker="<" if below else ">", color=self.color[m], ms=5, clip_on=False)
                ax.annotate(f"{m} {v:.1f}", (edge, other), xytext=(6 if below else -6, 0), textcoords="offset points",
                            ha="left" if below else "right", va="center", fontsize=6, color=self.color[m])
            else:
                ax.plot([other], [edge], marker="v" if below else "^", color=self.color[m], ms=5, clip_on=False)
                ax.annotate(f"{m} {v:.1f}", (other, edge), xytext=(0, 5 if below else -5), textcoords="offset points",
                            ha="center", va="bottom" if below else "top", fontsize=6, color=self.color[m])

    def family_legend(self, fig, methods, **kw):
        from matplotlib.lines import Line2D
        fams = [f for f in FAMILIES if any(self.style[m].family == f for m in methods)]
        handles = [Line2D([], [], color=PALETTES[f][0 if f != "reference" else 1], marker="s", ls="", ms=5) for f in fams]
        fig.legend(handles, fams, fontsize=6.5, frameon=False, handletextpad=0.2, columnspacing=1.0, **kw)

    def label_color(self, ax, methods):
        for t, m in zip(ax.get_yticklabels(), methods):
            t.set_color(self.color[m])

    # ------------------------------------------------------------------ figures
    def summary(self):
        """A dot plot per metric: one row per method, the mean over runs and its 95 % interval. The axis
        spans at least ``SUMMARY_MIN_SPAN`` points, so a sub-point gap is not stretched across the panel."""
        panels = [(k, t) for k, t in (("r10", "final R@10 (%)"), ("bwt_r10", "BWT on R@10 (%)"),
                                      ("acc", "final zero-shot Acc (%)"), ("bwt_acc", "BWT on Acc (%)"))
                  if any(self.agg[m][k][0] is not None for m in self.methods)]
        if not panels:
            return
        names, n = self.methods, len(self.methods)
        fig, axes = self.figure(PAGE, 0.15 * n + 1.05, ncols=len(panels), sharey=True, squeeze=False)
        axes = axes[0]
        for ax, (key, title) in zip(axes, panels):
            ci = {m: estimate({run_key(r): r["summary"].get(key) for r in self.by_method[m]}) for m in names}
            mean = {m: ci[m].mean for m in names}
            half = {m: ci[m].half or 0.0 for m in names}
            shown = [m for m in self.compared if mean[m] is not None]
            ax.set_xlim(*zoom([mean[m] + s * half[m] for m in shown for s in (-1, 0, 1)],
                              [mean[m] for m in self.refs], min_span=SUMMARY_MIN_SPAN))
            for y, m in enumerate(names):
                if mean[m] is None:
                    continue
                ax.errorbar(mean[m], y, xerr=half[m], fmt=self.marker[m], color=self.color[m], ms=3.5, lw=0.8,
                            capsize=1.5, mfc="white" if self.style[m].reference else self.color[m])
            for m in self.naive:
                if mean[m] is not None:
                    ax.axvline(mean[m], color=self.color[m], lw=0.6, ls=":")
            self.edge_marks(ax, [(m, mean[m], y) for y, m in enumerate(names)], "x")
            ax.set_xlabel(title, fontsize=7.5)
            ax.tick_params(labelsize=6.5)
            ax.grid(axis="x", alpha=0.3, lw=0.5)
            prev = None
            for y, m in enumerate(names):          # thin rules between families
                fam = self.style[m].family
                if prev is not None and fam != prev:
                    ax.axhline(y - 0.5, color="#e0e0e0", lw=0.6)
                prev = fam
        axes[0].set_yticks(range(n), names, fontsize=7)
        self.label_color(axes[0], names)
        axes[0].set_ylim(n - 0.5, -0.5)
        counts = sorted({len(self.by_method[m]) for m in names})
        self.title(fig, f"summary: mean and 95 % interval over runs (n = {', '.join(map(str, counts))})\n"
                   f"each method's own interval: a gap between two methods needs a paired comparison")
        fig.tight_layout(pad=0.4, w_pad=0.6)
        self.save(fig, "summary")

    def forest(self):
        """Paired differences from the reference row: one row per compared method, its mean difference and the
        95 % interval over paired runs; filled where the interval excludes 0, open where it does not."""
        ref, cmp = self.comparison.reference, self.comparison
        if ref is None or not cmp.metrics:
            return
        names = [m for m in self.compared if m != ref]
        if not names:
            return
        n = len(names)
        fig, axes = self.figure(PAGE, 0.15 * n + 1.05, ncols=len(cmp.metrics), sharey=True, squeeze=False)
        axes = axes[0]
        for ax, metric in zip(axes, cmp.metrics):
            for y, m in enumerate(names):
                d = cmp.versus(m, ref, metric)
                if d.mean is None:
                    continue
                sign = 1 if metric.higher else -1           # back to the metric's own units: row − reference
                filled = d.separated != 0
                ax.errorbar(sign * d.mean, y, xerr=d.half or 0.0, fmt=self.marker[m], color=self.color[m], ms=3.5,
                            lw=0.8, capsize=1.5, mfc=self.color[m] if filled else "white")
            ax.axvline(0, color="black", lw=0.6, ls=":")
            ax.set_xlabel(f"{metric.title} − {ref} ({'points' if metric.unit == '%' else metric.unit})", fontsize=7.5)
            ax.tick_params(labelsize=6.5)
            ax.grid(axis="x", alpha=0.3, lw=0.5)
        axes[0].set_yticks(range(n), names, fontsize=7)
        self.label_color(axes[0], names)
        axes[0].set_ylim(n - 0.5, -0.5)
        pairs = sorted({cmp.versus(m, ref, cmp.metrics[0]).n for m in names})
        self.title(fig, f"paired differences from {ref} (same seed, task order and world; n = "
                   f"{', '.join(map(str, pairs))} pairs)\nmean and 95 % interval; filled: the interval excludes 0")
        fig.tight_layout(pad=0.4, w_pad=0.6)
        self.save(fig, "forest")

    def stability_plasticity(self):
        pts = {m: (self.agg[m]["bwt_r10"], self.agg[m]["plasticity_r10"]) for m in self.methods}
        pts = {m: ((x, xs), (y, ys)) for m, ((x, xs, _), (y, ys, _)) in pts.items() if x is not None and y is not None}
        if not pts:
            return
        fig, ax = self.figure(PAGE, 4.2)
        fig.subplots_adjust(left=0.09, right=0.84, bottom=0.11, top=0.92)
        comp = [m for m in self.compared if m in pts]
        refs = [m for m in self.refs if m in pts]
        ax.set_xlim(*zoom([pts[m][0][0] + s * (pts[m][0][1] or 0) for m in comp for s in (-1, 1)],
                          [pts[m][0][0] for m in refs], pad=0.12))
        ax.set_ylim(*zoom([pts[m][1][0] + s * (pts[m][1][1] or 0) for m in comp for s in (-1, 1)],
                          [pts[m][1][0] for m in refs], pad=0.12))
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        inside = [m for m in pts if x0 <= pts[m][0][0] <= x1 and y0 <= pts[m][1][0] <= y1]
        for m in inside:
            (x, xs), (y, ys) = pts[m]
            ax.errorbar(x, y, xerr=xs or 0, yerr=ys or 0, fmt=self.marker[m], color=self.color[m], ms=5, lw=0.7,
                        capsize=1.5, alpha=0.9, mfc="white" if self.style[m].reference else self.color[m], zorder=3)
        for m in pts:
            if m in inside:
                continue
            (x, _), (y, _) = pts[m]
            cx, cy = min(max(x, x0), x1), min(max(y, y0), y1)
            ax.plot([cx], [cy], marker=self.marker[m], color=self.color[m], ms=5, mfc="white", clip_on=False, zorder=3)
            ax.annotate(f"{m} (outside: {x:.1f}, {y:.1f})", (cx, cy), xytext=(4, 4 if cy == y0 else -8),
                        textcoords="offset points", fontsize=6, color=self.color[m])
        if x0 <= 0 <= x1:
            ax.axvline(0, color="black", lw=0.5, ls=":")
        # labels beside their points, none over another label or marker
        fig.canvas.draw()
        to_px = ax.transData.transform
        xy = [tuple(to_px((pts[m][0][0], pts[m][1][0]))) for m in inside]
        font = 6.5
        sizes = [(0.6 * font * len(m) * DPI / 72 + 4, 1.3 * font * DPI / 72 + 2) for m in inside]
        bars = []                              # the error bars, as thin boxes no label may cover
        for m in inside:
            (x, xs), (y, ys) = pts[m]
            (ax0, ay0), (ax1, ay1) = to_px((x - (xs or 0), y - (ys or 0))), to_px((x + (xs or 0), y + (ys or 0)))
            cx, cy = to_px((x, y))
            bars += [(ax0, cy - 1.5, ax1, cy + 1.5), (cx - 1.5, ay0, cx + 1.5, ay1)]
        bb = ax.get_window_extent()
        offsets = place_labels(xy, sizes, (bb.x0, bb.y0, bb.x1, bb.y1), radius=3.5 * DPI / 72, step=6 * DPI / 72,
                               obstacles=bars)
        for m, (dx, dy), (w, h) in zip(inside, offsets, sizes):
            # beyond the first ring of positions the label may sit among other points: a leader line says whose
            far = abs(dx) - w / 2 > 7 * DPI / 72 or abs(dy) - h / 2 > 7 * DPI / 72
            ax.annotate(m, (pts[m][0][0], pts[m][1][0]), xytext=(dx * 72 / DPI, dy * 72 / DPI),
                        textcoords="offset points", ha="center", va="center", fontsize=font, color=self.color[m],
                        arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}
                        if far else None, zorder=4)
        ax.set_xlabel("stability: BWT on R@10 (%, right = less forgetting)", fontsize=8)
        ax.set_ylabel("plasticity: R@10 right after\nlearning each task (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, lw=0.5)
        self.family_legend(fig, list(pts), loc="center left", bbox_to_anchor=(0.85, 0.5), ncol=1)
        self.title(fig, "stability–plasticity, mean ± std over runs")
        self.save(fig, "stability_plasticity")

    def _family_panels(self, series, xs, name, ylabel, title, decimals=1, xlabel="after step", ticks=None,
                       note=""):
        """One panel per family of compared methods: its methods in colour (± std shaded) and labelled at
        their line's end, every other compared method in grey, the naive baseline and the references dashed
        in every panel. ``series(run)`` gives one value per x."""
        mean, std = {}, {}
        for m in self.methods:
            per_seed = [series(r) for r in self.in_order[m]]
            mean[m] = [_nanmean(col) for col in zip(*per_seed)]
            std[m] = [_nanstd(col) for col in zip(*per_seed)]
        keep = [i for i in range(len(xs)) if any(not math.isnan(mean[m][i]) for m in self.methods)]
        if not keep:
            return
        xs = [xs[i] for i in keep]
        mean = {m: [v[i] for i in keep] for m, v in mean.items()}
        std = {m: [v[i] for i in keep] for m, v in std.items()}
        fams = [f for f in FAMILIES if f not in ("reference", "naive")
                and any(self.style[m].family == f for m in self.compared)]
        panels = [[m for m in self.compared if self.style[m].family == f] for f in fams] or [list(self.compared)]
        titles = fams or ["all methods"]
        ncol = 1 if len(panels) == 1 else 2
        nrow = math.ceil(len(panels) / ncol)
        extra = 0.13 if note else 0.0                  # a second line under the title
        W, H = (COLUMN + 0.6 if ncol == 1 else PAGE), 1.9 * nrow + 0.75 + extra
        fig, axes = self.figure(W, H, nrows=nrow, ncols=ncol, sharey=True, squeeze=False)
        # fixed margins in inches (room for the end labels right of each panel), so the label positions
        # computed below hold in the saved file
        left, right, gap, top, bottom = 0.5, 0.95, 1.05, 0.72 + extra, 0.35
        panel_w = (W - left - right - (ncol - 1) * gap) / ncol
        panel_h = (H - top - bottom - (nrow - 1) * 0.45) / nrow
        fig.subplots_adjust(left=left / W, right=1 - right / W, top=1 - top / H, bottom=bottom / H,
                            wspace=gap / panel_w, hspace=0.45 / panel_h)
        lines = [v for m in self.compared for v in mean[m]]
        lo, hi = zoom(lines, [v for m in self.refs for v in mean[m]], pad=0.06)
        dashed = self.naive + self.refs
        for k, (ax, members, ttl) in enumerate(zip(axes.flat, panels, titles)):
            for m in self.compared:
                if m not in members and m not in self.naive:
                    ax.plot(xs, mean[m], color=GREY, lw=0.7, zorder=1)
            for m in dashed:
                ax.plot(xs, mean[m], color=self.color[m], lw=0.9, ls="--", zorder=2)
            for m in members:
                ax.plot(xs, mean[m], color=self.color[m], lw=1.3, marker=self.marker[m] if len(xs) <= 15 else None,
                        ms=3, zorder=3)
                ax.fill_between(xs, [a - b for a, b in zip(mean[m], std[m])], [a + b for a, b in zip(mean[m], std[m])],
                                color=self.color[m], alpha=0.12, lw=0, zorder=2)
            ax.set_ylim(lo, hi)
            ax.set_xlim(xs[0] - 0.3, xs[-1] + 0.3)
            if ticks is None:
                ax.set_xticks(xs)
            else:
                ax.set_xticks(*ticks)
                for b in range(math.ceil(xs[0]), math.floor(xs[-1]) + 1):      # step boundaries
                    ax.axvline(b, color="#e6e6e6", lw=0.5, zorder=0)
            ax.tick_params(labelsize=6.5)
            ax.grid(alpha=0.3, lw=0.5)
            ax.set_title(ttl, fontsize=8, loc="left")
            # labels at the right end, spread so none overlaps; references outside the zoom marked there too
            ends = [(m, mean[m][-1]) for m in members + dashed if not math.isnan(mean[m][-1])]
            px = ax.transData.transform
            ys = [px((xs[-1], min(max(v, lo), hi)))[1] for _, v in ends]
            bb = ax.get_window_extent()
            placed = spread(ys, 7.5 * DPI / 72, bb.y0, bb.y1)
            inv = ax.transData.inverted().transform
            for (m, v), y in zip(ends, placed):
                text = m if lo <= v <= hi else f"{m} ({v:.{decimals}f})"
                ax.annotate(text, (xs[-1], min(max(v, lo), hi)), xytext=(xs[-1] + 0.45, inv((0, y))[1]),
                            textcoords="data", fontsize=6.2, color=self.color[m], va="center", ha="left",
                            annotation_clip=False,
                            arrowprops={"arrowstyle": "-", "color": GREY, "lw": 0.4, "shrinkA": 1, "shrinkB": 1,
                                        "relpos": (0, 0.5)})
            if k % ncol == 0:
                ax.set_ylabel(ylabel, fontsize=7)
            if k >= len(panels) - ncol:
                ax.set_xlabel(xlabel, fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        self.title(fig, title + self.order_note)
        fig.text(0.5, 1 - 0.36 / H, "in colour: the panel's family (± std over runs shaded); grey: the other methods; "
                 "dashed: " + ", ".join(dashed) + (f"\n{note}" if note else ""), ha="center", va="top",
                 fontsize=6.5, color="#444444", linespacing=1.3)
        self.save(fig, name)

    def curves(self):
        T = len(self.tasks)
        first = next((j for j in range(T) if "recall" in self.tasks[j]["metrics"]), 0)
        before = ", ".join(f"{j + 1} ({short_task(self.tasks[j])})" for j in range(first))
        note = (f"the curves start after step {first + 1}: step{'s' if first > 1 else ''} {before} "
                f"report{'' if first > 1 else 's'} no recall" if first else "")
        self._family_panels(lambda r: seen_average(r["matrices"]["r10"]), list(range(1, T + 1)), "curve_r10_seen",
                            "mean R@10 over seen tasks (%)", "average R@10 over the tasks seen so far", note=note)

    def alignment(self):
        T = len(self.tasks)
        if T >= 2:
            self._family_panels(lambda r: old_tasks_average(r["matrices"]["align_dev"]), list(range(2, T + 1)),
                                "align_dev", "alignment deviation (ratio)",
                                "how far old tasks' alignment scores moved (mean over old tasks)", decimals=3)

    def loss_curves(self):
        """The InfoNCE of the training batches, mean per epoch, step after step (the optimised loss adds each
        method's own terms, which do not compare across methods)."""
        steps = [[s for s in r["timings"]["steps"]] for rs in self.in_order.values() for r in rs]
        if not any("infonce" in s for st in steps for s in st):
            return                  # run files written before losses were recorded
        T = len(self.tasks)
        epochs = max(len(s.get("infonce", ())) for st in steps for s in st)

        def series(r):
            out = []
            for s in r["timings"]["steps"]:
                vals = list(s.get("infonce", ()))
                out += vals + [math.nan] * (epochs - len(vals))
            return out + [math.nan] * (T * epochs - len(out))

        xs = [t + (e + 1) / epochs for t in range(T) for e in range(epochs)]
        self._family_panels(series, xs, "loss_curves", "training InfoNCE (mean per epoch)",
                            "training loss, epoch after epoch of each step", decimals=2, xlabel="step",
                            ticks=([t + 0.5 for t in range(T)], [str(t + 1) for t in range(T)]))

    def within_series(self, m: str) -> tuple[list[float], list[float]]:
        """A method's within-step curve, mean over its runs in the file's order that have the same evaluation
        points as its first: x = step index (0-based) + iteration / the step's iterations, y = the old tasks'
        mean R@10 minus its value before the step; NaN between steps (the old tasks change)."""
        runs = [r for r in self.in_order[m] if "within_step" in r]
        if not runs:
            return [], []
        grid = [c["iterations"] for c in runs[0]["within_step"]["steps"]]
        runs = [r for r in runs if [c["iterations"] for c in r["within_step"]["steps"]] == grid]
        xs: list[float] = []
        ys: list[float] = []
        for k, c in enumerate(runs[0]["within_step"]["steps"]):
            n = c["iterations"][-1] or 1
            xs += [c["step"] + i / n for i in c["iterations"]] + [math.nan]
            per_run = []
            for r in runs:
                means = [_nanmean(point) for point in r["within_step"]["steps"][k]["r10"]]
                per_run.append([v - means[0] for v in means])
            ys += [_nanmean(col) for col in zip(*per_run)] + [math.nan]
        return xs, ys

    def stability_gap(self):
        series = {m: self.within_series(m) for m in self.methods}
        series = {m: xy for m, xy in series.items() if xy[0]}
        compared = [m for m in self.compared if m in series]
        if not compared:
            return                  # no run evaluated within its steps
        fams = [f for f in FAMILIES if f not in ("reference", "naive")
                and any(self.style[m].family == f for m in compared)]
        panels = [[m for m in compared if self.style[m].family == f] for f in fams] or [compared]
        titles = fams or ["all methods"]
        dashed = [m for m in self.naive + self.refs if m in series]
        ncol = 1 if len(panels) == 1 else 2
        nrow = math.ceil(len(panels) / ncol)
        fig, axes = self.figure(PAGE if ncol == 2 else COLUMN + 0.6, 1.75 * nrow + 0.8, nrows=nrow, ncols=ncol,
                                sharex=True, sharey=True, squeeze=False)
        ys = [v for m in compared for v in series[m][1] if not math.isnan(v)]
        lo, hi = zoom(ys + [0.0], pad=0.06)
        T = len(self.tasks)
        for k, (ax, members, ttl) in enumerate(zip(axes.flat, panels, titles)):
            for m in compared:
                if m not in members and m not in dashed:
                    ax.plot(*series[m], color=GREY, lw=0.6, zorder=1)
            for m in dashed:
                ax.plot(*series[m], color=self.color[m], lw=0.9, ls="--", zorder=2, label=m)
            for m in members:
                ax.plot(*series[m], color=self.color[m], lw=1.2, zorder=3, label=m)
            ax.axhline(0, color="#888888", lw=0.5, zorder=0)
            for b in range(1, T + 1):
                ax.axvline(b, color="#e6e6e6", lw=0.5, zorder=0)
            ax.set_ylim(lo, hi)
            ax.set_xlim(1, T)
            ax.set_xticks(range(1, T + 1))
            ax.tick_params(labelsize=6.5)
            ax.set_title(ttl, fontsize=8, loc="left")
            ax.legend(fontsize=5.5, frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4,
                      handlelength=1.5, borderaxespad=0.1, columnspacing=0.8)
            if k % ncol == 0:
                ax.set_ylabel("Δ old tasks' R@10 (points)", fontsize=7)
            if k >= len(panels) - ncol:
                ax.set_xlabel("step (step t trains from t − 1 to t)", fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        every = sorted({r["within_step"]["every"] for rs in self.in_order.values() for r in rs if "within_step" in r})
        self.title(fig, f"stability gap: old tasks' R@10 inside each step, every {', '.join(map(str, every))} "
                   "iterations, minus before the step" + self.order_note)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
        self.save(fig, "stability_gap")

    def train_time(self):
        names = self.methods
        secs = {m: [r["timings"]["train_seconds"] for r in self.by_method[m]] for m in names}
        trained = [m for m in names
                   if any(s.get("iterations") for r in self.by_method[m] for s in r["timings"]["steps"])]
        if not trained:
            return
        fig, ax = self.figure(COLUMN, 0.15 * len(names) + 0.8)
        for y, m in enumerate(names):
            if m not in trained:
                ax.annotate("does not train", (0, y), xycoords=("axes fraction", "data"), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize=6, color="#777777")
                continue
            med = _median(secs[m])
            ax.plot([min(secs[m]), max(secs[m])], [y, y], color=self.color[m], lw=1.2)
            ax.plot([med], [y], marker=self.marker[m], color=self.color[m], ms=3.5)
        ax.set_xscale("log")
        vals = [v for m in trained for v in secs[m] if v > 0]
        lo, hi = min(vals) / 1.4, max(vals) * 1.4
        ax.set_xlim(lo, hi)
        from matplotlib.ticker import FuncFormatter, NullFormatter
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)             # 2, 5, 10 — not 2×10⁰
        ax.xaxis.set_minor_formatter(plain if hi / lo < 12 else NullFormatter())
        ax.set_yticks(range(len(names)), names, fontsize=6.5)
        self.label_color(ax, names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        # no cost ratios: runs of one sweep share noisy cores and are timed once each, so a ratio of two
        # rows is not a measurement (benchmarks/method_cost.py times them paired and repeated)
        ax.set_xlabel("training seconds per run, as timed in this sweep (median, range over runs);\n"
                      "cost ratios: benchmarks/method_cost.py (paired, repeated timings)", fontsize=6.5)
        ax.tick_params(axis="x", labelsize=6.5)
        ax.grid(axis="x", which="both", alpha=0.25, lw=0.4)
        ax.set_title(f"{self.stream}: training time", fontsize=8)
        self.save(fig, "train_time")

    def final_by_task(self):
        """Methods × tasks: final R@10 printed; colour = difference from the median compared method."""
        cols = [j for j in range(len(self.tasks)) if "recall" in self.tasks[j]["metrics"]]
        if not cols:
            return
        pair_of = {j: "–".join(self.tasks[j]["modalities"]) for j in cols}
        cols.sort(key=lambda j: (pair_of[j], j))
        final = {m: mean_matrix(self.in_order[m], "r10")[-1] for m in self.methods}
        names, C, n = self.methods, len(cols), len(self.methods)
        vals = [[final[m][j] for j in cols] + [_nanmean([final[m][j] for j in cols])] for m in names]
        med = [_median([vals[i][c] for i, m in enumerate(names) if m in self.compared and not math.isnan(vals[i][c])])
               for c in range(C + 1)]
        diff = [[v - med[c] for c, v in enumerate(row)] for row in vals]
        span = max([abs(diff[i][c]) for i, m in enumerate(names) if m in self.compared
                    for c in range(C + 1) if not math.isnan(diff[i][c])] + [0.5])
        fig, ax = self.figure(PAGE, 0.17 * n + 1.5)
        im = ax.imshow(diff, cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
        for i in range(n):
            for c in range(C + 1):
                v = vals[i][c]
                if math.isnan(v):
                    continue
                strong = abs(diff[i][c]) > 0.6 * span
                ax.text(c, i, f"{v:.1f}", ha="center", va="center", fontsize=5.5,
                        color="white" if strong else "black")
        ax.set_yticks(range(n), names, fontsize=6.5)
        self.label_color(ax, names)
        ticks = [f"{self.tasks[j]['source']}\n{_wrap_pair(pair_of[j])}\nstep {j + 1}" for j in cols] + ["mean"]
        ax.set_xticks(range(C + 1), ticks, fontsize=5.5)
        ax.tick_params(length=0)
        ax.xaxis.tick_top()
        for c in range(1, C + 1):             # white rules between modality pairs and before the mean
            if c == C or pair_of[cols[c]] != pair_of[cols[c - 1]]:
                ax.axvline(c - 0.5, color="white", lw=2.5)
        for i in range(1, n):
            if self.style[names[i]].family != self.style[names[i - 1]].family:
                ax.axhline(i - 0.5, color="white", lw=1.2)
        cb = fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
        cb.set_label("R@10 − median method on the task (points)", fontsize=6.5)
        cb.ax.tick_params(labelsize=6)
        ax.set_title(f"{self.stream}: final R@10 (%) per task, grouped by modality pair{self.order_note}", fontsize=8,
                     pad=26)
        self.save(fig, "final_r10_by_task")

    def heatmaps(self, key: str, page: str = "1"):
        """Pages of ``HEATMAP_PANELS`` methods: the (T+1)×T matrix of each, one colour scale for all pages."""
        title = {"r10": "Recall@10 (%, mean of both directions)", "acc": "zero-shot Acc (%)"}[key]
        mats = {m: mean_matrix(self.in_order[m], key) for m in self.methods}
        cols = self.heatmap_columns(key)
        if not cols:
            return
        p = int(page)
        pages = self.heatmap_pages(key)
        methods = self.methods[(p - 1) * HEATMAP_PANELS: p * HEATMAP_PANELS]
        T, C = len(self.tasks), len(cols)
        vals = [row[j] for mat in mats.values() for row in mat for j in cols if not math.isnan(row[j])]
        vmin, vmax = min(vals), max(vals)
        ncol = 3
        nrow = math.ceil(len(methods) / ncol)           # the last page as tall as its own rows
        H = nrow * (0.55 + 0.15 * (T + 1)) + 1.3
        fig, axes = self.figure(PAGE, H, nrows=nrow, ncols=ncol, squeeze=False)
        rows = ["before training"] + [f"{t}. {short_task(self.tasks[t - 1])}" for t in range(1, T + 1)]
        mid = (vmin + vmax) / 2
        im = None
        for k, ax in enumerate(axes.flat):
            if k >= len(methods):
                ax.axis("off")
                continue
            m = methods[k]
            mat = [[row[j] for j in cols] for row in mats[m]]
            im = ax.imshow(mat, cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax)
            ax.set_title(f"{m} ({len(self.in_order[m])} runs)", fontsize=7.5, color=self.color[m])
            ax.set_xticks(range(C), [short_task(self.tasks[j]) if k >= len(methods) - ncol else "" for j in cols],
                          fontsize=5.5, rotation=40, ha="right", rotation_mode="anchor")
            ax.set_yticks(range(T + 1), rows if k % ncol == 0 else [""] * (T + 1), fontsize=5.5)
            ax.tick_params(length=0)
        # the layout is computed before the cell values are written: hundreds of texts inside the axes would
        # only slow it down
        fig.tight_layout(pad=0.4, h_pad=0.6, w_pad=0.4, rect=(0, 0, 0.9, 1 - 0.45 / H))
        for k, m in enumerate(methods):
            ax = axes.flat[k]
            for i, row in enumerate(mats[m]):
                for c, j in enumerate(cols):
                    if not math.isnan(row[j]):
                        ax.text(c, i, f"{row[j]:.0f}", ha="center", va="center", fontsize=5,
                                color="white" if row[j] < mid else "black")
        cax = fig.add_axes((0.91, 0.3, 0.012, 0.4))
        fig.colorbar(im, cax=cax).set_label(title, fontsize=6.5)
        cax.tick_params(labelsize=6)
        self.title(fig, f"{title}, mean over runs" + self.order_note + (f" (page {p} of {pages})" if pages > 1 else "")
                   + "\nrows: evaluated before training and after each step; columns: test sets")
        self.save(fig, f"heatmaps_{key}_p{p}", tight=False)

    def heatmap_columns(self, key):
        mat = mean_matrix(self.in_order[self.methods[0]], key)
        return [j for j in range(len(self.tasks)) if any(not math.isnan(row[j]) for row in mat)]

    def heatmap_pages(self, key) -> int:
        return math.ceil(len(self.methods) / HEATMAP_PANELS) if self.heatmap_columns(key) else 0

    # ------------------------------------------------------------------ all of them
    def jobs(self) -> list[str]:
        heat = [f"heatmaps:{k}:{p}" for k in ("r10", "acc") for p in range(1, self.heatmap_pages(k) + 1)]
        return heat + ["summary", "forest", "stability_plasticity", "curves", "final_by_task", "alignment", "loss_curves",
                       "stability_gap", "train_time"]

    def draw(self, job: str):
        try:
            with self.mpl.rc_context({"font.size": 7, "axes.linewidth": 0.6, "xtick.major.width": 0.5,
                                      "ytick.major.width": 0.5, "pdf.fonttype": 42}):
                getattr(self, job.split(":")[0])(*job.split(":")[1:])
        except Exception as e:
            # a full disk inside savefig surfaces as PIL's AttributeError raised while handling the OSError:
            # the disk error is the cause, and it alone reaches the user (one line, not a 60-line traceback)
            cause = _os_error_in(e)
            if cause is None or cause is e:
                raise
            raise OSError(cause.errno, cause.strerror, cause.filename) from None

    def all(self, workers: int = 2):
        """Every figure. Drawing text-heavy figures is CPU-bound matplotlib work, so the figures are split
        over ``workers`` forked processes (each inherits the loaded runs); the files are the same."""
        jobs = self.jobs()
        workers = min(workers, os.cpu_count() or 1)
        if workers > 1 and "fork" in mp.get_all_start_methods():
            global _FORKED
            _FORKED = self          # the workers inherit it: nothing (matplotlib included) is pickled
            try:
                pool = mp.get_context("fork").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),))
                try:
                    pool.map(_draw_in_worker, jobs, chunksize=1)
                    pool.close()                 # the workers end on their own: none is signalled
                except BaseException:
                    pool.terminate()
                    raise
                finally:
                    pool.join()
            finally:
                _FORKED = None
        else:
            for job in jobs:
                self.draw(job)


_FORKED: Plotter | None = None


def _os_error_in(e: BaseException) -> OSError | None:
    """The first operating-system error in ``e``'s chain of causes and contexts (``e`` itself included)."""
    seen = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        if isinstance(link, OSError):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def _draw_in_worker(job: str):
    assert _FORKED is not None, "a drawing worker forked without its Plotter"
    _FORKED.draw(job)
