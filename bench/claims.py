"""Claims: two runners sharing a results folder never train the same run.

Before a run starts, its runner creates ``<run file>.claim`` exclusively (``O_EXCL``) holding its owner
(host, pid, the process's start time, a random token). While the run trains, a heartbeat thread refreshes the
claim's modification time every ``HEARTBEAT`` seconds. A claim is taken over when its owner is known to be
gone: at once when the owner ran on this host and its process no longer exists (kill -9, SIGTERM, a crash:
compared by pid and start time, so a reused pid does not count as the owner), and for an owner on another
host once the claim has not been refreshed for ``STALE`` seconds (a lost machine). A run whose file appeared
meanwhile with the same configuration hash was finished by another runner and is skipped. The claim is
removed once the run's file is written (or it failed). Torch-free.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

HEARTBEAT = 15.0
STALE = 90.0
CLAIMED = "claimed by another runner"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of process ``pid`` from /proc; None where /proc cannot
    say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started: with the pid it names one process, even after the pid is reused."""
    stat = _stat(pid)
    return stat[1] if stat else None


def owner_gone(owner: dict) -> bool:
    """True when the claim's owner ran on this host and its process is gone: no such pid, a zombie (dead, not
    yet reaped), or another process that reuses the pid."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:          # exists, another user's
        pass
    stat = _stat(pid)
    if stat is None:
        return False
    state, start = stat
    return state == "Z" or (owner.get("start") is not None and start != owner["start"])


class Claims:
    def __init__(self, out: Path | str, force: bool = False):
        """``force``: the sweep reruns finished runs (``--force``), so a run file counts as finished by
        another runner only when it was written after this sweep started."""
        self.out, self.force, self.started = Path(out), force, time.time()
        self.token = uuid.uuid4().hex
        self.held: dict[Path, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _claim_path(self, run) -> Path:
        p = run.path(self.out)
        return p.with_name(p.name + ".claim")

    def take(self, run) -> str | None:
        """Claim ``run``; ``None`` when taken, else why it is skipped."""
        from .errors import BenchError
        from .reporting.records import read_run
        path, claim = run.path(self.out), self._claim_path(run)
        claim.parent.mkdir(parents=True, exist_ok=True)
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid()),
                            "token": self.token, "config_hash": run.hash})
        for _ in range(3):
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over(claim):
                    return CLAIMED
                continue
            with os.fdopen(fd, "w") as f:
                f.write(owner)
            break
        else:
            return CLAIMED
        if path.exists() and (not self.force or path.stat().st_mtime >= self.started):
            try:
                if read_run(path)["config_hash"] == run.hash:
                    claim.unlink(missing_ok=True)
                    return "finished by another runner"
            except BenchError:
                pass
        with self._lock:
            self.held[claim] = time.time()
        return None

    def _take_over(self, claim: Path) -> bool:
        """Remove ``claim`` when its owner is gone; False while it may still be at work. The claim is first
        renamed to a name of this runner's own and read again: of two runners taking over one dead claim, only
        the one whose rename moved the dead owner's file goes on; a live claim moved by mistake (made between
        the read and the rename) is put back."""
        try:
            text, age = claim.read_text(), time.time() - claim.stat().st_mtime
        except FileNotFoundError:
            return True                                   # released meanwhile: try again
        try:
            owner = json.loads(text)
        except ValueError:
            owner = None                                  # being written (or damaged): judged by its age
        gone = age >= STALE or (isinstance(owner, dict) and owner_gone(owner))
        if not gone:
            return False
        mine = claim.with_name(f"{claim.name}.{self.token}")
        try:
            os.rename(claim, mine)
        except FileNotFoundError:
            return True
        if mine.read_text() != text:                      # not the file judged gone: put it back
            try:
                os.link(mine, claim)
            except FileExistsError:
                pass
            mine.unlink(missing_ok=True)
            return False
        mine.unlink(missing_ok=True)
        return True

    def release(self, run) -> None:
        claim = self._claim_path(run)
        with self._lock:
            self.held.pop(claim, None)
        claim.unlink(missing_ok=True)

    def _beat(self):
        while not self._stop.wait(HEARTBEAT):
            with self._lock:
                claims = list(self.held)
            for c in claims:
                try:
                    os.utime(c)
                except FileNotFoundError:
                    pass

    def close(self):
        """Stop beating and remove every claim still held (an interrupted sweep frees its runs at once)."""
        self._stop.set()
        with self._lock:
            claims, self.held = list(self.held), {}
        for c in claims:
            c.unlink(missing_ok=True)
