"""Rebuild one stream's derived files from its run records: summary.csv, table.md, table.tex, figures/,
report.md. Nothing here trains or imports torch."""
from __future__ import annotations

from pathlib import Path

from ..errors import BenchError
from ..files import write_atomic
from .records import load_runs
from .summary import summary_csv
from .tables import table_md, table_tex


def rebuild(stream_dir: Path, methods: list[str] | None = None, figures: bool = True) -> str:
    """Write summary.csv, table.md, table.tex, figures/ and report.md of one stream folder; return table.md."""
    from .report import report_md
    stream_dir = Path(stream_dir)
    runs = load_runs(stream_dir, methods)
    if not runs:
        raise BenchError(f"no run files under {stream_dir / 'runs'}"
                         + (f" for methods {', '.join(methods)}" if methods else ""))
    stream = runs[0]["stream"]
    table = table_md(runs, stream)
    write_atomic(stream_dir / "summary.csv", summary_csv(runs))
    write_atomic(stream_dir / "table.md", table)
    write_atomic(stream_dir / "table.tex", table_tex(runs, stream))
    fig_dir = stream_dir / "figures"
    if figures:
        from .figures import Plotter
        fig_dir.mkdir(exist_ok=True)
        Plotter(runs, fig_dir, stream).all()
    shown = sorted(p.stem for p in fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    write_atomic(stream_dir / "report.md", report_md(runs, stream, table, shown))
    return table


def stream_dirs(root: Path, stream: str | None) -> list[Path]:
    """The stream folders under ``root`` (or ``root`` itself when it is one)."""
    if (root / "runs").is_dir():
        return [root]
    dirs = sorted(p for p in root.iterdir() if (p / "runs").is_dir()) if root.is_dir() else []
    if stream is not None:
        dirs = [d for d in dirs if d.name == stream]
    if not dirs:
        raise BenchError(f"no results under {root}" + (f" for stream {stream!r}" if stream else "")
                         + " (expected <dir>/<stream>/runs/<method>/seed<k>.json)")
    return dirs
