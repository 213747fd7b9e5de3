"""User-facing errors: one line, exit code 2, no traceback (the CLIs catch these)."""


class BenchError(Exception):
    """Bad input from the user (unknown name, malformed file, bad option). The message is one line that
    names what is wrong and where; the CLI prints it as ``error: <message>`` and exits with code 2."""

    exit_code = 2
