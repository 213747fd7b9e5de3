"""Which code produced a result: the package version and, in a git checkout, the commit (``-dirty`` when the
tracked files differ from it). Recorded in every run record and every tuned-settings file. Torch-free."""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
                          timeout=10).stdout.strip()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        v = version("cmcl-bench")
    except PackageNotFoundError:  # pragma: no cover
        v = "unknown"
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        if commit and _git("status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{v}+{commit}" if commit else v
