"""Claims: two runners sharing a results folder never train the same run.

Before a run starts, its runner creates ``<run file>.claim`` exclusively (``O_EXCL``) holding its owner
(host, pid, a random token). While the run trains, a heartbeat thread refreshes the claim's modification
time every ``HEARTBEAT`` seconds; a claim not refreshed for ``STALE`` seconds belongs to a runner that died
(kill -9, a lost machine) and is taken over. A run whose file appeared meanwhile with the same configuration
hash was finished by another runner and is skipped. The claim is removed once the run's file is written (or
it failed). Torch-free.
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
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                            "config_hash": run.hash})
        for _ in range(2):
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    age = time.time() - claim.stat().st_mtime
                except FileNotFoundError:
                    continue                                  # released meanwhile: try again
                if age < STALE:
                    return "claimed by another runner"
                claim.unlink(missing_ok=True)                 # its owner stopped beating: take it over
                continue
            with os.fdopen(fd, "w") as f:
                f.write(owner)
            break
        else:
            return "claimed by another runner"
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
