"""Atomic file output: readers never see a half-written file, and a failure leaves nothing behind.

Every file the suite writes (run records, tables, figures, feature banks, extraction batches) goes through
``atomic_path``: the writer fills a temporary file in the destination folder, which is renamed over the
destination only once it is complete. Torch-free: the results rebuild imports it.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import BenchError


@contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path next to ``path``; on a clean exit it replaces ``path``, on an error it is
    removed. The temporary keeps ``path``'s suffix (matplotlib and h5py choose formats by it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp's 0600 would hide results from the user's group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, content: str | bytes) -> None:
    """Write text (UTF-8, ``\\n`` line ends) or bytes to ``path`` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(content)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def die_with_parent(parent: int | None = None) -> None:
    """In a worker process: be killed when the parent dies, even by kill -9 (Linux; elsewhere a no-op), so
    no worker keeps writing for a parent that is gone. ``parent``: the parent's pid, to exit at once if it
    died before this ran (between the fork and the worker's start). SIGTERM goes back to its default (die at
    once): a forked worker inherits the CLI's Python handler, and a pool terminating its workers (SIGTERM,
    then a join) waited forever on one that took the signal inside that handler (measured: one pool in 10–50
    hung when the handler stayed; none in 300 without it)."""
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def check_writable(folder: Path | str, flag: str = "--out") -> None:
    """Fail before any work when ``folder`` cannot hold results: a file, not writable, or under something that
    is not a writable folder. Creates nothing (a folder that does not exist yet is checked through its
    nearest existing parent)."""
    if not str(folder).strip():
        raise BenchError(f"{flag} is empty: name a folder (. for the current one)")
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    reason = None
    if not probe.is_dir():
        reason = f"{probe} is not a folder"
    elif probe == folder:
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as e:
            reason = e.strerror or str(e)
    else:
        try:        # a folder made and removed at once: permissions alone miss /proc, read-only mounts, ...
            os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".write-check-"))
        except OSError as e:
            reason = f"{probe} is not writable ({e.strerror or e})"
    if reason:
        raise BenchError(f"{flag} {folder}: cannot write results there ({reason})")


NAME_MAX = 150      # characters of a name that becomes a path component (file systems stop at 255 bytes)


def name_problem(name) -> str | None:
    """What keeps ``name`` from naming one file or folder inside the results (None: nothing): a separator
    or a dot name would put results elsewhere (``..`` in the parent folder, ``.`` in --out itself)."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty name"
    if "/" in name or "\\" in name:
        return "must not contain '/' or '\\' (it names one folder)"
    if name.startswith("."):
        return "must not start with '.' ('.', '..' and hidden names are not result folders)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not contain NUL or control characters"
    if len(name) > NAME_MAX:
        return f"must be at most {NAME_MAX} characters, got {len(name)}"
    return None


def check_name(name, where: str) -> str:
    """``name`` when it can name a result folder; else a one-line ``BenchError`` starting with ``where``."""
    problem = name_problem(name)
    if problem:
        shown = name if not isinstance(name, str) or len(name) <= 40 else name[:37] + "..."
        raise BenchError(f"{where} {problem}, got {shown!r}")
    return name
