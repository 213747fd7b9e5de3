"""Rebuild one stream's derived files from its run records: summary.csv, table.md, table.tex, figures/,
report.md. Nothing here trains or imports torch."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import BenchError
from ..files import write_atomic
from .compare import check_reference
from .records import load_runs
from .summary import summary_csv
from .tables import table_md, table_tex

OUTPUTS = ("summary.csv", "table.md", "table.tex", "report.md", ".rebuild.json")   # the last: how they were built


JOURNAL = ".rebuild-swap.json"     # written once the new outputs are complete: from then on they are the state


def rebuild(stream_dir: Path, methods: list[str] | None = None, figures: bool = True, out: Path | None = None,
            reference: str | None = None) -> str:
    """Write summary.csv, table.md, table.tex, figures/ and report.md of one stream folder; return table.md.

    ``methods``: only these rows (method names or variant labels; a name without runs is an error naming
    what there is). ``reference``: the row the table compares the others with (None: the naive method's;
    a name without runs is an error). ``out``: write there instead of into ``stream_dir`` (a subset drawn elsewhere leaves the
    full rebuild untouched). Everything is built in a staging folder first; a failure there (a figure that
    cannot be drawn, a full disk, a kill) leaves the previous outputs untouched. Once it is complete, a
    journal naming it is written, and then the files are moved into place (``_swap``): a process killed
    during the moves leaves the journal, and the next rebuild or ``up_to_date`` finishes them first — the
    outputs are the old set or the new one, never a mix that stays. One rebuild at a time per folder
    (a lock; two runners sharing --out both rebuild at their end)."""
    import tempfile

    from .records import label
    from .report import report_md
    stream_dir = Path(stream_dir)
    runs = load_runs(stream_dir)
    if not runs:
        raise BenchError(f"no run files under {stream_dir / 'runs'}")
    if methods:
        found = sorted(labels_in(stream_dir, runs))
        missing = [m for m in dict.fromkeys(methods) if m not in found]
        if missing:
            raise BenchError(f"{stream_dir}: no runs of {', '.join(missing)}; the runs there are of "
                             f"{', '.join(found)}")
        runs = [r for r in runs if label(r) in methods]
    check_reference(reference, {label(r) for r in runs}, str(stream_dir))
    target = stream_dir if out is None else Path(out)
    target.mkdir(parents=True, exist_ok=True)
    stream = runs[0]["stream"]
    table = table_md(runs, stream, reference)
    codes = sorted({str(r.get("versions", {}).get("code")) for r in runs if r.get("versions", {}).get("code")})
    if len(codes) > 1:
        import sys
        print(f"warning: {stream_dir.name}'s table mixes runs of {len(codes)} code versions ({', '.join(codes[:3])}"
              f"{', …' if len(codes) > 3 else ''}); rerun with --force to make it uniform", file=sys.stderr)
    with _locked(target):
        finish_pending(target)
        stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
        try:
            write_atomic(stage / "summary.csv", summary_csv(runs))
            write_atomic(stage / "table.md", table)
            write_atomic(stage / "table.tex", table_tex(runs, stream, reference))
            write_atomic(stage / ".rebuild.json", _settings(reference))
            fig_dir = target / "figures"
            if figures:
                from .figures import Plotter
                (stage / "figures").mkdir()
                Plotter(runs, stage / "figures", stream, reference).all()
                shown = sorted(p.stem for p in (stage / "figures").glob("*.png"))
            else:
                shown = sorted(p.stem for p in fig_dir.glob("*.png")) if fig_dir.is_dir() else []
            source = None if target == stream_dir else stream_dir
            write_atomic(stage / "report.md", report_md(runs, stream, table, shown, source=source, reference=reference))
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        write_atomic(target / JOURNAL, json.dumps({"stage": stage.name}) + "\n")     # the commit point
        _swap(target, stage)
    return table


def finish_pending(target: Path) -> None:
    """Finish a swap a killed rebuild left (its journal), and remove what a rebuild killed before its commit
    point left (a staging folder without a journal). Call with the folder's lock held."""
    target = Path(target)
    journal = target / JOURNAL
    if journal.exists():
        try:
            stage = target / json.loads(journal.read_text())["stage"]
        except (OSError, ValueError, KeyError, TypeError):
            stage = None                 # a journal is written atomically: only a hand-edited one lands here
        if stage is not None and stage.is_dir():
            _swap(target, stage)
        else:
            journal.unlink(missing_ok=True)
    for leftover in [*target.glob(".staging-*"), *target.glob(".figures-old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _swap(target: Path, stage: Path) -> None:
    """Move a complete staging folder's outputs into place, then drop the journal. Every step can be
    repeated after a kill at any point (``finish_pending`` calls it again): figures/ as one folder rename,
    each file a rename within the folder."""
    if (stage / "figures").is_dir():
        old = target / f".figures-old-{stage.name}"
        if (target / "figures").exists():           # not yet put aside (else a killed attempt did it)
            (target / "figures").rename(old)
        (stage / "figures").rename(target / "figures")
        shutil.rmtree(old, ignore_errors=True)
    for name in OUTPUTS:
        if (stage / name).exists():
            (stage / name).replace(target / name)
    shutil.rmtree(stage, ignore_errors=True)
    (target / JOURNAL).unlink(missing_ok=True)


class _locked:
    """An exclusive lock on a results folder while it is rebuilt: ``flock`` on the folder itself (no lock file
    left behind), released by the kernel when the process dies, so a killed rebuild never blocks the next.
    Where ``fcntl`` is missing, no lock."""

    def __init__(self, target: Path):
        self.path = Path(target)

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            self.fd = None
            return self
        self.fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
        return False


def _settings(reference: str | None) -> str:
    """What the derived files were built with, beyond the run files (``up_to_date`` compares it)."""
    return json.dumps({"compare": reference}, sort_keys=True) + "\n"


def up_to_date(stream_dir: Path, figures: bool = True, reference: str | None = None) -> bool:
    """True when the derived files (and the figures, if asked for) exist, are newer than every run file and
    were built with the same reference row: a rerun that trained nothing need not draw them again
    (``python -m bench.rebuild`` always does). A swap a killed rebuild left is finished first."""
    stream_dir = Path(stream_dir)
    if (stream_dir / JOURNAL).exists() or any(stream_dir.glob(".staging-*")):
        with _locked(stream_dir):
            finish_pending(stream_dir)
    outputs = [stream_dir / n for n in OUTPUTS] + ([stream_dir / "figures"] if figures else [])
    if not all(p.exists() for p in outputs):
        return False
    if figures and not any((stream_dir / "figures").glob("*.png")):
        return False
    if (stream_dir / ".rebuild.json").read_text() != _settings(reference):
        return False
    newest_run = max((p.stat().st_mtime_ns for p in stream_dir.glob("runs/*/seed*.json")), default=0)
    return min(p.stat().st_mtime_ns for p in outputs) >= newest_run


def labels_in(stream_dir: Path, runs: list | None = None) -> set[str]:
    """The rows (method names or variant labels) a stream folder has runs of."""
    from .records import label
    return {label(r) for r in (load_runs(stream_dir) if runs is None else runs)}


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
