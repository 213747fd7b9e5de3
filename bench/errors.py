"""User-facing errors: one line, exit code 2, no traceback (the CLIs catch these)."""
import argparse


class BenchError(Exception):
    """Bad input from the user (unknown name, malformed file, bad option). The message is one line that
    names what is wrong and where; the CLI prints it as ``error: <message>`` and exits with code 2."""

    exit_code = 2


class ArgumentParser(argparse.ArgumentParser):
    """The CLIs' parser: a command-line mistake is one line and exit 2, like every other bad input (argparse
    prints its whole usage first: 20 lines for bench.run)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C: claims released, workers stopped,
    finished runs kept."""


def run_cli(body, interrupted: str = "interrupted: rerun the same command to continue") -> int:
    """Run a CLI's body: a ``BenchError`` becomes ``error: <message>`` on stderr and its exit code (2), an
    interrupt (Ctrl-C, or SIGTERM) a one-line note and 130 (143), an operating-system error (full disk, …) one
    line and 1 — never a traceback. ``body()`` returns the exit code (None = 0)."""
    import sys
    try:
        with _sigterm_unwinds():
            return body() or 0
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print(interrupted.replace("interrupted", "terminated", 1), file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except BrokenPipeError:              # the reader left (``--list | head``): what it read is what it wanted
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())    # no second error at exit's flush
        return 0
    except OSError as e:                 # the machine, not the input: a full disk, a vanished folder
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}; finished runs are saved, rerun to continue", file=sys.stderr)
        return 1


class _sigterm_unwinds:
    """While a CLI's body runs in the main thread, SIGTERM raises ``Terminated`` there (Python's default is to
    die at once, leaving claims behind that make a rerun skip the runs it held)."""

    def __enter__(self):
        import signal
        import threading
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            import os
            _INSTALLED_IN.append(os.getpid())
            self.previous = signal.signal(signal.SIGTERM, _raise_terminated)
        return self

    def __exit__(self, *exc):
        import signal
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            _INSTALLED_IN.pop()
        return False


_INSTALLED_IN: list[int] = []      # the pid that installed the handler: forked children inherit it


def _raise_terminated(signum, frame):
    import os
    import signal
    if _INSTALLED_IN and os.getpid() != _INSTALLED_IN[-1]:   # a forked worker (a pool the parent terminates):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)          # it dies as a worker should, without a traceback
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()
