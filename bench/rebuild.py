"""``python -m bench.rebuild [DIR]``: rebuild summary.csv, table.md, table.tex, figures and report.md from
stored run files, without training (torch and avalanche are never imported). ``--methods a,b --out DIR``
draws a subset into DIR/<stream>/ and leaves the full rebuild alone."""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import ArgumentParser, run_cli


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m bench.rebuild",
                       description="Rebuild summary.csv, table.md, table.tex, figures and report.md from stored run "
                                   "files (no training). python -m bench.figures is the same command.")
    p.add_argument("dir", nargs="?", default="results", help="results folder or one stream's folder (default results/)")
    p.add_argument("--stream", help="only this stream")
    p.add_argument("--methods", help="comma-separated rows to draw (method names or variant labels; default: all "
                                     "found); with --out")
    p.add_argument("--out", help="write into OUT/<stream>/ instead of the results folder itself (required with "
                                 "--methods, so a subset never replaces the full tables and figures)")
    p.add_argument("--no-figures", action="store_true", help="tables and report only")
    p.add_argument("--compare", metavar="ROW", help="the row the table marks others against (paired "
                   "differences, probability of improvement; default: the naive method, vanilla)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def body():
        from .errors import BenchError
        from .files import check_writable
        from .reporting.rebuild import rebuild, stream_dirs
        methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else None
        if args.methods is not None and not methods:
            raise BenchError("--methods: no method named")
        if methods and args.out is None:
            raise BenchError("--methods draws a subset: give --out DIR for it (the full tables and figures in "
                             f"{args.dir} stay as they are)")
        dirs = stream_dirs(Path(args.dir), args.stream)
        if methods and len(dirs) > 1:           # only the streams that have these rows; checked before writing
            from .reporting.rebuild import labels_in
            found = {d: labels_in(d) for d in dirs}
            having = [d for d in dirs if set(methods) & found[d]]
            if not having:
                raise BenchError(f"--methods: no stream under {args.dir} has runs of {', '.join(methods)}")
            for d in having:
                missing = [m for m in methods if m not in found[d]]
                if missing:
                    raise BenchError(f"{d}: no runs of {', '.join(missing)}; the runs there are of "
                                     f"{', '.join(sorted(found[d]))} (--stream draws one stream)")
            dirs = having
        if args.compare is not None:            # every folder checked before any is written
            from .reporting.compare import check_reference
            from .reporting.rebuild import labels_in
            for d in dirs:
                check_reference(args.compare, labels_in(d) & set(methods) if methods else labels_in(d), str(d))
        outs = [None] * len(dirs)
        if args.out is not None:
            check_writable(args.out)
            outs = [Path(args.out) / d.name for d in dirs]
            for d, o in zip(dirs, outs):
                if methods and o.resolve() == d.resolve():
                    raise BenchError(f"--out {args.out}: writes into {d} itself; choose another folder for a subset")
        for d, o in zip(dirs, outs):
            print(rebuild(d, methods, figures=not args.no_figures, out=o, reference=args.compare))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
