"""``python -m bench.figures [DIR]``: rebuild summary.csv, table.md, table.tex, figures and report.md from
stored run files, without training (torch and avalanche are never imported)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import run_cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.figures",
                                description="Rebuild summary.csv, table.md, table.tex, figures and report.md "
                                            "from stored run files (no training).")
    p.add_argument("dir", nargs="?", default="results", help="results folder or one stream's folder (default results/)")
    p.add_argument("--stream", help="only this stream")
    p.add_argument("--methods", help="comma-separated methods to include (default: all found)")
    p.add_argument("--no-figures", action="store_true", help="tables and report only")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def body():
        from .reporting.rebuild import rebuild, stream_dirs
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        for d in stream_dirs(Path(args.dir), args.stream):
            print(rebuild(d, methods, figures=not args.no_figures))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
