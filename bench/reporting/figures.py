"""The comparison figures of one stream's runs, drawn from run records alone (matplotlib, Agg backend).

Imports neither torch nor avalanche, so a results folder copied anywhere can be re-plotted in seconds.
Every figure is written as PNG and PDF, each atomically.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
from pathlib import Path

from ..files import atomic_path, die_with_parent
from .records import label, row_order
from .summary import aggregate


def _nanmean(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _nanstd(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def mean_matrix(runs: list[dict], key: str) -> list[list[float]]:
    """Element-wise mean over seeds; NaN where undefined."""
    mats = [r["matrices"][key] for r in runs]
    return [[_nanmean([m[i][j] for m in mats]) for j in range(len(mats[0][0]))] for i in range(len(mats[0]))]


def seen_average(matrix: list[list[float | None]]) -> list[float]:
    """After each step t = 1..T: mean of the defined entries R[t][j] over the tasks seen so far (j < t)."""
    return [_nanmean([matrix[t][j] for j in range(t)]) for t in range(1, len(matrix))]


def old_tasks_average(matrix: list[list[float | None]]) -> list[float]:
    """After each step t = 2..T: mean over the tasks learned before step t (j < t−1) — the old tasks."""
    return [_nanmean([matrix[t][j] for j in range(t - 1)]) for t in range(2, len(matrix))]


class Plotter:
    def __init__(self, runs: list[dict], fig_dir: Path, stream: str):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        self.plt, self.runs, self.dir, self.stream = plt, runs, fig_dir, stream
        self.methods = row_order(runs)
        self.by_method = {m: [r for r in runs if label(r) == m] for m in self.methods}
        self.tasks = runs[0]["tasks"]
        cmap = plt.get_cmap("tab10" if len(self.methods) <= 10 else "tab20")
        self.color = {m: cmap(i % cmap.N) for i, m in enumerate(self.methods)}
        # colours repeat or look alike past ten methods: markers keep every method distinct
        self.marker = {m: "osD^vP*Xph<>"[i % 12] for i, m in enumerate(self.methods)}

    def save(self, fig, name: str, tight: bool = True):
        """PNG and PDF, each written under a temporary name and renamed. ``tight`` crops to the drawn
        artists (an extra draw: the heatmap grids set their own margins instead)."""
        for ext in ("png", "pdf"):
            with atomic_path(self.dir / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight" if tight else None)
        self.plt.close(fig)

    def task_labels(self, cols=None):
        cols = range(len(self.tasks)) if cols is None else cols
        return [f"{j + 1}. {self.tasks[j]['name']}" for j in cols]

    def heatmaps(self, key: str):
        """One panel per method (small multiples share one colour scale, so methods compare at a glance)."""
        label = {"r10": "Recall@10 (%, mean of both directions)", "acc": "zero-shot Acc (%)"}[key]
        mats = {m: mean_matrix(self.by_method[m], key) for m in self.methods}
        any_mat = next(iter(mats.values()))
        cols = [j for j in range(len(self.tasks)) if any(not math.isnan(row[j]) for row in any_mat)]
        if not cols:
            return
        T, C, n = len(self.tasks), len(cols), len(self.methods)
        ncol = min(n, 3 if C > 4 else 5)
        nrow = math.ceil(n / ncol)
        vals = [row[j] for m in mats.values() for row in m for j in cols if not math.isnan(row[j])]
        vmin, vmax = min(vals), max(vals)
        pw, ph = 0.9 + 0.5 * C, 0.9 + 0.32 * (T + 1)
        fig, axes = self.plt.subplots(nrow, ncol, figsize=(pw * ncol + 1.2, ph * nrow + 1.0), squeeze=False)
        # fixed margins: constrained layout costs seconds once there are a dozen panels
        fig.subplots_adjust(left=0.6 / (pw * ncol + 1.2), right=1 - 1.1 / (pw * ncol + 1.2), bottom=0.5 / (ph * nrow + 1.0),
                            top=1 - 1.1 / (ph * nrow + 1.0), wspace=0.18, hspace=0.28)
        mid = (vmin + vmax) / 2
        for k, m in enumerate(self.methods):
            ax = axes[k // ncol][k % ncol]
            mat = [[row[j] for j in cols] for row in mats[m]]
            im = ax.imshow(mat, cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax)
            ax.set_title(f"{m} ({len(self.by_method[m])} seed(s))", fontsize=9)
            ax.set_xticks(range(C), [str(j + 1) for j in cols], fontsize=7)
            ax.set_yticks(range(T + 1), ["0"] + [str(t) for t in range(1, T + 1)], fontsize=7)
            if k % ncol == 0:
                ax.set_ylabel("after step", fontsize=8)
            if k // ncol == nrow - 1:
                ax.set_xlabel("test set (step)", fontsize=8)
            for i in range(T + 1):
                for j in range(C):
                    v = mat[i][j]
                    if not math.isnan(v):
                        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if v < mid else "black")
        for k in range(n, nrow * ncol):
            axes[k // ncol][k % ncol].axis("off")
        cax = fig.add_axes([1 - 0.9 / (pw * ncol + 1.2), 0.25, 0.15 / (pw * ncol + 1.2), 0.5])
        fig.colorbar(im, cax=cax, label=label)
        labels = [f"{j + 1} {self.tasks[j]['name']}" for j in cols]
        names = "\n".join("; ".join(labels[i:i + 6]) for i in range(0, len(labels), 6))
        fig.suptitle(f"{self.stream}: {label}, mean over seeds; rows = evaluated after step (0 = zero-shot)\n"
                     f"test sets: {names}", fontsize=8 if C > 4 else 9, va="top",
                     y=1 - 0.12 / (ph * nrow + 1.0))
        self.save(fig, f"heatmaps_{key}", tight=False)

    def summary_bars(self):
        agg = aggregate(self.runs)
        names = self.methods
        panels = [("r10", "final R@10 (%)"), ("bwt_r10", "BWT on R@10 (%)"), ("acc", "final zero-shot Acc (%)"),
                  ("bwt_acc", "BWT on Acc (%)")]
        fig, axes = self.plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 0.45 * len(names) + 1.6),
                                      sharey=True)
        for ax, (key, title) in zip(axes, panels):
            means = [agg[m][key][0] if agg[m][key][0] is not None else math.nan for m in names]
            stds = [agg[m][key][1] or 0.0 for m in names]
            ax.barh(range(len(names)), means, xerr=stds, color=[self.color[m] for m in names], capsize=3)
            ax.set_yticks(range(len(names)), names)
            ax.invert_yaxis()
            ax.set_xlabel(title, fontsize=9)
            ax.axvline(0, color="black", lw=0.6)
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(f"{self.stream}: summary, mean ± std over seeds", fontsize=11)
        fig.tight_layout()
        self.save(fig, "summary_bars")

    def stability_plasticity(self):
        agg = aggregate(self.runs)
        fig, ax = self.plt.subplots(figsize=(7.5, 5))
        font = 8 if len(self.methods) <= 10 else 6     # many methods crowd the plane: the legend disambiguates
        for k, m in enumerate(self.methods):
            (x, xs, _), (y, ys, _) = agg[m]["bwt_r10"], agg[m]["plasticity_r10"]
            if x is None or y is None:
                continue
            ax.errorbar(x, y, xerr=xs, yerr=ys, fmt=self.marker[m], color=self.color[m], capsize=3, label=m,
                        ms=6)
            ax.annotate(m, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=font)
        ax.axvline(0, color="black", lw=0.6, ls=":")
        ax.set_xlabel("stability: BWT on R@10 (%, higher = less forgetting)")
        ax.set_ylabel("plasticity: R@10 right after learning each task (%)")
        ax.set_title(f"{self.stream}: stability–plasticity (mean ± std over seeds)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        self.save(fig, "stability_plasticity")

    def _lines(self, series, xs, name, ylabel, title, xlabel="after step", logy=False, methods=None):
        fig, ax = self.plt.subplots(figsize=(7, 4.2))
        for m in self.methods if methods is None else methods:
            per_seed = [series(r) for r in self.by_method[m]]
            mean = [_nanmean(col) for col in zip(*per_seed)]
            std = [_nanstd(col) for col in zip(*per_seed)]
            ax.plot(xs, mean, marker="o", ms=3, color=self.color[m], label=m)
            ax.fill_between(xs, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                            color=self.color[m], alpha=0.15, lw=0)
        ax.set_xticks(xs)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.set_title(f"{self.stream}: {title}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(self.methods) > 8 else 1, loc="best")
        self.save(fig, name)

    def curves(self):
        T = len(self.tasks)
        self._lines(lambda r: seen_average(r["matrices"]["r10"]), list(range(1, T + 1)), "curve_r10_seen",
                    "mean R@10 over the tasks seen so far (%)", "average R@10 over seen tasks after each step")

    def alignment(self):
        T = len(self.tasks)
        if T < 2:
            return
        self._lines(lambda r: [100 * v for v in old_tasks_average(r["matrices"]["align_dev"])],
                    list(range(2, T + 1)), "align_dev",
                    "mean alignment-score deviation of old tasks (% of ‖A_jj‖)",
                    "how far old alignment scores moved (DNS's stability quantity)")

    def train_time(self):
        T = len(self.tasks)
        trained = [m for m in self.methods if any(s["iterations"] for r in self.by_method[m] for s in r["timings"]["steps"])]
        if trained:         # methods that never train (frozen) would only squash the log scale
            self._lines(lambda r: [s["train_seconds"] for s in r["timings"]["steps"]], list(range(1, T + 1)),
                        "train_time", "training seconds", "training time per step (methods that train)",
                        xlabel="step", logy=True, methods=trained)

    def final_by_pair(self):
        final = {m: mean_matrix(self.by_method[m], "r10")[-1] for m in self.methods}
        spread = {m: [_nanstd([r["matrices"]["r10"][-1][j] for r in self.by_method[m]]) for j in range(len(self.tasks))]
                  for m in self.methods}
        cols = [j for j in range(len(self.tasks)) if "recall" in self.tasks[j]["metrics"]]
        pair_of = {j: "–".join(self.tasks[j]["modalities"]) for j in cols}
        cols.sort(key=lambda j: (pair_of[j], j))
        if not cols:
            return
        n = len(self.methods)
        width = 0.8 / n
        fig, ax = self.plt.subplots(figsize=(max(7, 0.9 * len(cols) + 0.12 * n * len(cols)), 4.6))
        for i, m in enumerate(self.methods):
            xs = [k + (i - (n - 1) / 2) * width for k in range(len(cols))]
            ax.bar(xs, [final[m][j] for j in cols], width, yerr=[spread[m][j] for j in cols],
                   color=self.color[m], label=m, capsize=1.5, error_kw={"lw": 0.6})
        ax.set_xticks(range(len(cols)), [f"{pair_of[j]}\n{self.tasks[j]['source']} (step {j + 1})" for j in cols],
                      fontsize=7, rotation=30, ha="right")
        prev = None
        for k, j in enumerate(cols):          # separators between modality-pair groups
            if prev is not None and pair_of[j] != prev:
                ax.axvline(k - 0.5, color="grey", lw=0.6, ls="--")
            prev = pair_of[j]
        ax.set_ylabel("final R@10 (%)")
        ax.set_title(f"{self.stream}: final R@10 per task, grouped by modality pair", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        self.save(fig, "final_r10_by_pair")

    def draw(self, job: str):
        getattr(self, job.split(":")[0])(*job.split(":")[1:])

    def all(self, workers: int = 2):
        """Every figure. Drawing text-heavy figures is CPU-bound matplotlib work, so the figures are split
        over ``workers`` forked processes (each inherits the loaded runs); the files are the same."""
        jobs = ["heatmaps:r10", "heatmaps:acc", "summary_bars", "stability_plasticity", "curves", "final_by_pair",
                "alignment", "train_time"]
        workers = min(workers, os.cpu_count() or 1)
        if workers > 1 and "fork" in mp.get_all_start_methods():
            global _FORKED
            _FORKED = self          # the workers inherit it: nothing (matplotlib included) is pickled
            try:
                with mp.get_context("fork").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                    pool.map(_draw_in_worker, jobs, chunksize=1)
            finally:
                _FORKED = None
        else:
            for job in jobs:
                self.draw(job)


_FORKED: Plotter | None = None


def _draw_in_worker(job: str):
    _FORKED.draw(job)
