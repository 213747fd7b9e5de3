"""``python -m bench.figures [DIR]``: rebuild summary.csv, table.md and figures from run files alone.

Imports neither torch nor avalanche, so it runs in a second on a results folder copied anywhere.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .errors import BenchError
from .results import TABLE_COLUMNS, aggregate, load_runs, method_order, summary_csv, table_md, write_atomic


def mean_matrix(runs: list[dict], key: str) -> list[list[float]]:
    """Element-wise mean over seeds; NaN where undefined."""
    mats = [r["matrices"][key] for r in runs]
    rows, cols = len(mats[0]), len(mats[0][0])
    out = []
    for i in range(rows):
        row = []
        for j in range(cols):
            vals = [m[i][j] for m in mats if m[i][j] is not None]
            row.append(sum(vals) / len(vals) if vals else math.nan)
        out.append(row)
    return out


def _save(fig, path: Path):
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)


def heatmap(runs: list[dict], method: str, key: str, path: Path):
    import matplotlib.pyplot as plt
    mat = mean_matrix(runs, key)
    tasks = [t["name"] for t in runs[0]["tasks"]]
    T = len(tasks)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * T, 1.2 + 0.5 * (T + 1)))
    im = ax.imshow(mat, cmap="viridis", aspect="auto")
    ax.set_xticks(range(T), [f"{j + 1}. {n}" for j, n in enumerate(tasks)], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(T + 1), ["0 (zero-shot)"] + [f"after {t}" for t in range(1, T + 1)], fontsize=8)
    ax.set_xlabel("test set (step. source:pair)")
    ax.set_ylabel("evaluated after step")
    for i in range(T + 1):
        for j in range(T):
            v = mat[i][j]
            if math.isnan(v):     # the task does not report this metric
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color="grey")
            else:
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < (im.norm.vmin + im.norm.vmax) / 2 else "black")
    label = {"r10": "Recall@10 (%, mean of both directions)", "acc": "zero-shot Acc (%)"}.get(key, key)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(f"{method}: {label}, mean over {len(runs)} seed(s)", fontsize=10)
    _save(fig, path)
    plt.close(fig)


def bar_chart(runs: list[dict], path: Path, stream: str):
    import matplotlib.pyplot as plt
    agg = aggregate(runs)
    names = list(agg)
    panels = [("r10", "final R@10 (%)"), ("bwt_r10", "BWT on R@10 (%)"), ("acc", "final zero-shot Acc (%)"),
              ("bwt_acc", "BWT on Acc (%)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 0.45 * len(names) + 1.6), sharey=True)
    for ax, (key, title) in zip(axes, panels):
        means = [agg[m][key][0] if agg[m][key][0] is not None else math.nan for m in names]
        stds = [agg[m][key][1] or 0.0 for m in names]
        ax.barh(range(len(names)), means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.axvline(0, color="black", lw=0.6)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{stream}: mean ± std over seeds", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def rebuild(stream_dir: Path, methods: list[str] | None = None, figures: bool = True) -> str:
    """Write summary.csv, table.md and figures/ of one stream folder; return the table text."""
    stream_dir = Path(stream_dir)
    runs = load_runs(stream_dir, methods)
    if not runs:
        raise BenchError(f"no run files under {stream_dir / 'runs'}")
    stream = runs[0]["stream"]
    table = table_md(runs, stream)
    write_atomic(stream_dir / "summary.csv", summary_csv(runs))
    write_atomic(stream_dir / "table.md", table)
    if figures:
        import matplotlib
        matplotlib.use("Agg")
        fig_dir = stream_dir / "figures"
        fig_dir.mkdir(exist_ok=True)
        for m in method_order(runs):
            rs = [r for r in runs if r["method"] == m]
            heatmap(rs, m, "r10", fig_dir / f"heatmap_r10_{m}.png")
        bar_chart(runs, fig_dir / "summary_bars.png", stream)
    return table


def stream_dirs(root: Path, stream: str | None) -> list[Path]:
    if (root / "runs").is_dir():
        return [root]
    dirs = sorted(p for p in root.iterdir() if (p / "runs").is_dir()) if root.is_dir() else []
    if stream is not None:
        dirs = [d for d in dirs if d.name == stream]
    if not dirs:
        raise BenchError(f"no results under {root}" + (f" for stream {stream!r}" if stream else "")
                         + " (expected <dir>/<stream>/runs/<method>/seed<k>.json)")
    return dirs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.figures",
                                description="Rebuild summary.csv, table.md and figures from stored run files.")
    p.add_argument("dir", nargs="?", default="results", help="results folder or one stream's folder (default results/)")
    p.add_argument("--stream", help="only this stream")
    p.add_argument("--methods", help="comma-separated methods to include (default: all found)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        for d in stream_dirs(Path(args.dir), args.stream):
            print(rebuild(d, methods))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
