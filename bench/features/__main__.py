"""``python -m bench.features``: make feature banks.

- ``import-official``: convert the official CMCL code's feature cache (per-sample HDF5) into banks.
- ``extract``: encode an image–text source with an open_clip model into a bank (``bench.features.extract``).
- ``check``: open and validate bank files, print their shapes.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ArgumentParser, BenchError, run_cli


def parse_args(argv):
    p = ArgumentParser(prog="python -m bench.features", description="Make and check feature banks.")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-official", help="convert the official code's feature cache into banks")
    imp.add_argument("--features", required=True, help="the official features_storage/ folder")
    imp.add_argument("--datasets", required=True,
                     help="the official dataset/ folder (for paired_data_{split}.json: class names of samples)")
    imp.add_argument("--encoder", required=True, help="perceptor name in the cache file names (imagebind, languagebind, unibind)")
    imp.add_argument("--out", default="features", help="banks folder (default: features/)")
    imp.add_argument("--only", help="comma-separated datasets (default: all seven of the paper)")

    ext = sub.add_parser("extract", help="encode an image-text source with open_clip into a bank")
    from .extract import add_arguments
    add_arguments(ext)

    chk = sub.add_parser("check", help="validate bank files and print their shapes")
    chk.add_argument("paths", nargs="+", help="bank .h5 files or folders of them")
    return p.parse_args(argv)


def check(paths: list[str]) -> None:
    from .bank import read_split
    files = []
    for p in map(Path, paths):
        files += sorted(p.rglob("*.h5")) if p.is_dir() else [p]
    if not files:
        raise BenchError(f"no .h5 files in {', '.join(paths)}")
    for f in files:
        data = read_split(f)
        shapes = ", ".join(f"{m} {tuple(x.shape)}" for m, x in data.features.items())
        classes = f", {len(data.class_texts)} class texts" if data.class_texts is not None else ""
        print(f"{f}: {len(data)} pairs, {shapes}{classes}")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def body():
        if args.command == "import-official":
            from ..files import check_name, check_writable
            from .official import import_official
            check_writable(args.out, "--out")
            check_name(args.encoder, "--encoder")
            only = [s.strip() for s in args.only.split(",")] if args.only else None
            import_official(Path(args.features), Path(args.datasets), args.encoder, Path(args.out), only,
                            log=lambda s: print(s, file=sys.stderr))
        elif args.command == "extract":
            from .extract import run
            run(args)
        else:
            check(args.paths)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
