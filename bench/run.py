"""``python -m bench.run``: run methods on a stream over seeds; write run records, summary, table, figures.

Three stages: ``plan`` turns the arguments into ``RunSpec``s (validating everything before any work and
skipping finished runs), ``execute`` trains the rest and saves each record as it finishes, ``rebuild``
writes the derived files (``bench.reporting``).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import BenchError, run_cli
from .tuned import load_tuned, source_name, warn_if_other_training
from .variants import check_label, grid_points, parse_grid, variant_label

DEFAULT_STREAM = "sim-paper"
DEFAULT_SEEDS = "3"


def parse_args(argv):
    return build_parser().parse_args(argv)


def build_parser(prog="python -m bench.run",
                 description="Run continual multimodal contrastive learning methods on a stream of modality-pair "
                             "steps.") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--methods", default="all", help="'all' or a comma-separated list (see --list)")
    p.add_argument("--stream", default=DEFAULT_STREAM, help="built-in stream name or path of a stream .toml "
                   f"(default: {DEFAULT_STREAM})")
    p.add_argument("--encoder", help="feature banks to read for streams of banks (e.g. paper): imagebind, "
                   "languagebind, unibind or any bank name under --banks")
    p.add_argument("--banks", default="features", help="folder of feature banks: <banks>/<encoder>/<source>/<split>.h5 "
                   "(default: features/)")
    p.add_argument("--seeds", default=DEFAULT_SEEDS, help="N (seeds 0..N-1) or a comma-separated list i,j "
                   f"(default: {DEFAULT_SEEDS})")
    p.add_argument("--epochs", type=int, help="epochs per step (default: the stream's [train], else 5 as in the paper)")
    p.add_argument("--batch-size", type=int, help="default: the stream's [train], else 64")
    p.add_argument("--lr", type=float, help="default: the stream's [train], else 1e-4 (sim-paper: 5e-4)")
    p.add_argument("--weight-decay", type=float, help="default: the stream's [train], else 1e-3")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), help="default: the stream's [train], else adamw")
    p.add_argument("--lr-schedule", dest="schedule", choices=("constant", "linear"),
                   help="learning rate within each step: constant, or linear decay to 0 (default: constant)")
    p.add_argument("--clip-grad-norm", type=float, help="clip the heads' global gradient norm to this value "
                   "before any method's gradient hook (default: no clipping)")
    p.add_argument("--bias-decay", dest="decay_bias", action=argparse.BooleanOptionalAction, default=None,
                   help="apply weight decay to biases (default: yes)")
    p.add_argument("--protocol", default="paper", choices=("paper", "official"),
                   help="preset: 'paper' the paper's stated settings; 'official' how the official code trains "
                        "(linear LR decay, gradient clipping at 1.0, no bias decay, and --loss official); the "
                        "individual options override it")
    p.add_argument("--loss", choices=("default", "official"),
                   help="loss preset: 'default' symmetric InfoNCE, temperature 0.05, raw outputs; 'official' the "
                        "official code's one-way InfoNCE at temperature 1 (overridden by the three options below)")
    p.add_argument("--temperature", type=float, help="InfoNCE temperature")
    p.add_argument("--direction", choices=("both", "a2b"), help="InfoNCE direction: symmetric or m1→m2 only")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise head outputs inside the loss")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="override a method option, e.g. dns.lambda_min=0.001 (repeatable)")
    p.add_argument("--grid", dest="grids", action="append", default=[], metavar="METHOD.PARAM=V1,V2,...",
                   help="run every value (repeatable; cartesian per method); each setting is a variant with "
                        "its own label, run files and table row, e.g. dns[lambda_min=0.001]")
    p.add_argument("--label", dest="labels", action="append", default=[], metavar="METHOD=NAME",
                   help="name the row of METHOD's variant (with --set; not with --grid)")
    p.add_argument("--untuned", action="store_true", help="ignore the stream's tuned settings "
                   "(<stream>.tuned.json); results go to <out>/<stream>-untuned")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--jobs", type=int, help="runs in parallel processes (default: one per CPU core this process "
                   "may use, 1 on a GPU)")
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="where runs train: 'local' (this machine, --jobs processes) or 'ray' (tasks on a Ray "
                        "cluster: --address, or a local one with --jobs CPUs; pip install 'cmcl-bench[ray]')")
    p.add_argument("--address", help="Ray cluster address for --executor ray (e.g. auto, or HOST:6379)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--force", action="store_true", help="rerun runs whose result file already exists")
    p.add_argument("--no-figures", action="store_true", help="write summary.csv and table.md only")
    p.add_argument("--log", help="experiment tracking, comma-separated: tensorboard, csv, wandb (offline unless "
                   "WANDB_MODE says otherwise); logs go to <out>/<stream>/logs/<method>/seed<k>/")
    p.add_argument("--save-heads", action="store_true", help="save the heads after every step of the runs that "
                   "train: <out>/<stream>/heads/<method>/seed<k>/step<t>.pt (torch.load gives {modality: "
                   "{weight, bias}}); finished runs are not retrained (add --force)")
    p.add_argument("--list", action="store_true", help="list methods and streams and exit")
    p.add_argument("--describe", metavar="METHOD", help="print one method's paper, adaptation, options (defaults, "
                   "allowed values, search space) and tuned values per stream, and exit")
    return p


def parse_seeds(text: str) -> list[int]:
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise BenchError(f"--seeds must be a positive count N or a list i,j of integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise BenchError(f"--seeds must list distinct non-negative integers, got {text!r}")
    return seeds


def parse_sets(sets: list[str], known: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for s in sets:
        key, eq, value = s.partition("=")
        method, dot, param = key.rpartition(".")
        if not eq or not dot or not method or not param:
            raise BenchError(f"--set expects METHOD.PARAM=VALUE, got {s!r}")
        if method not in known:
            raise BenchError(f"--set {s!r}: unknown method {method!r}; available: {', '.join(known)}")
        out.setdefault(method, {})[param] = value
    return out


def list_all() -> str:
    from . import catalogue
    from .streams import builtin_streams, load
    lines = ["methods:"]
    for name, cls in catalogue.specs().items():
        lines.append(f"  {name:14s} {cls.describe()}")
    lines.append("streams:")
    for name in builtin_streams():
        spec = load(name)
        lines.append(f"  {name:14s} {spec.description} ({len(spec.steps)} steps)")
    return "\n".join(lines)


@dataclass
class Plan:
    stream: object      # StreamSpec
    stream_dir: Path
    todo: list          # RunSpec, in order
    skipped: int
    methods: list[str]
    seeds: list[int]
    runs: list = None   # every planned RunSpec (to do or already done), in order


def plan(args) -> Plan:
    """Every run the arguments ask for, validated before any work; finished runs (same configuration hash)
    are skipped unless ``--force``."""
    from . import catalogue, streams
    from .config import OFFICIAL_LOSS, OFFICIAL_TRAINING, LossConfig, RunSpec, TrainConfig
    from .features.bank import bank_shas

    known = catalogue.names()
    names = known if args.methods == "all" else list(dict.fromkeys(m.strip() for m in args.methods.split(",")
                                                                    if m.strip()))   # a repeated name runs once
    if not names:
        raise BenchError("--methods is empty")
    for m in names:
        catalogue.get(m)
    if args.jobs is None:
        args.jobs = default_jobs(args.device)
    if args.jobs < 1 or args.threads < 1:
        raise BenchError("--jobs and --threads must be >= 1")
    from .files import check_writable
    check_writable(args.out)
    seeds = parse_seeds(args.seeds)
    sets = parse_sets(args.sets, known)
    for m in sets:                  # validates names and values, also of methods not run
        catalogue.get(m).resolve(sets[m])
    grids = parse_grid(args.grids, known)
    labels = parse_labels(args.labels, known, grids)
    for flag, given in (("--set", sets), ("--grid", grids), ("--label", labels)):
        for m in given:
            if m not in names:
                raise BenchError(f"{flag} names method {m!r}, which --methods does not run (it runs "
                                 f"{', '.join(names)})")
    spec = streams.load(args.stream)
    if args.encoder and not spec.bank_sources and args.encoder not in spec.settings:
        raise BenchError(f"--encoder {args.encoder}: stream {spec.name!r} reads no feature banks and has no "
                         f"[settings.{args.encoder}]; --encoder applies to streams of banks (e.g. paper)")
    encoder_settings = stream_settings(spec, args.encoder, known)
    split = getattr(args, "split", "test")
    # tuning (validation split) starts from the untuned base; its runs never read tuned settings
    tuned, tuned_file, tuned_data = ({}, None, {}) if args.untuned or split != "test" else load_tuned(spec, args.encoder)
    tuned_source = source_name(tuned_file, spec) if tuned_file else None
    # a method the user sets or grids is chosen by hand; one left at its defaults beside tuned ones is noted
    untuned_rows = [m for m in names if tuned_file and m not in tuned and m not in sets and m not in grids
                    and catalogue.get(m).search_space]
    if untuned_rows:
        print(f"note: {tuned_source} has no tuned settings for {', '.join(untuned_rows)}: "
              f"{'it runs' if len(untuned_rows) == 1 else 'they run'} at the defaults next to tuned methods "
              f"(marked in the table; tune with python -m bench.tune --methods {','.join(untuned_rows)})",
              file=sys.stderr)
    points = getattr(args, "points", None) or {m: grid_points(grids.get(m, {})) for m in names}
    variants = {m: method_variants(m, encoder_settings.get(m, {}), tuned.get(m, {}), tuned_source, sets.get(m, {}),
                                   points.get(m, [{}]), labels.get(m)) for m in names}
    official = args.protocol == "official"
    base = OFFICIAL_LOSS if args.loss == "official" or (args.loss is None and official) else LossConfig()
    loss = LossConfig(temperature=base.temperature if args.temperature is None else args.temperature,
                      direction=base.direction if args.direction is None else args.direction,
                      normalize=base.normalize if args.normalize is None else args.normalize)
    cli = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
               optimizer=args.optimizer, schedule=args.schedule, clip_grad_norm=args.clip_grad_norm,
               decay_bias=args.decay_bias)
    from .config import FLAGS, train_problem
    for key, value in cli.items():                       # the command line's own values, blamed on their flag
        problem = None if value is None else train_problem(key, value)
        if problem:
            raise BenchError(f"{FLAGS[key]} {problem}")
    preset = OFFICIAL_TRAINING if official else {}
    train = TrainConfig(**{**spec.train, **encoder_settings.get("train", {}), **preset,
                           **{k: v for k, v in cli.items() if v is not None}})
    from dataclasses import asdict
    warn_if_other_training(tuned_data, tuned_file, asdict(train), asdict(loss))
    from dataclasses import replace

    from .tracking import parse_log
    loggers = parse_log(getattr(args, "log", None))
    if device_type(args.device) == "meta":
        raise BenchError("--device meta holds no values (the test suite uses it to check device handling); "
                         "choose cpu, cuda or mps")
    # the banks' content hashes are part of each run's configuration: read from the files' attributes,
    # so deciding what is finished needs neither torch nor the features
    shas = bank_shas(spec, args.encoder, args.banks, ("train", "test") if split == "test" else ("train",))
    todo, skipped = [], 0
    out = Path(args.out)
    stream_dir = out / RunSpec(spec, names[0], {}, 0, encoder=args.encoder, untuned=args.untuned).result_name
    if split == "validation":
        stream_dir = stream_dir / "tuning"
    check_same_stream(stream_dir, spec)
    every = []
    for m in names:
        for opts, label, sources in variants[m]:
            for seed in seeds:
                run = RunSpec(spec, m, opts, seed, train, loss, device=args.device, encoder=args.encoder,
                              banks=args.banks, bank_shas=shas, label=label,
                              option_sources=sources or None, untuned=args.untuned, split=split,
                              tuned=False if m in untuned_rows else None)
                if getattr(args, "save_heads", False):
                    run = replace(run, heads_dir=str(run.heads_path(out)))
                if loggers:
                    run = replace(run, log=loggers, log_dir=str(run.log_path(out)))
                every.append(run)
                todo, skipped = _todo_or_skip(run, out, args.force, todo, skipped)
    if todo:            # torch and the features only now that something will train
        check_device(args.device)
        from .runner import get_scenario
        get_scenario(spec, args.encoder, args.banks, split)     # validates the banks; workers inherit it
    return Plan(spec, stream_dir, todo, skipped, names, seeds, every)


def device_type(device: str) -> str:
    """``cuda`` for ``cuda:1``: read from the flag's text, without importing torch."""
    return device.split(":")[0].strip()


def default_jobs(device: str) -> int:
    """One run per CPU core this process may use (runs are single-threaded by default), or 1 on a GPU."""
    if device_type(device) != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                     # not Linux
        return max(1, os.cpu_count() or 1)


def check_device(device: str) -> None:
    import torch
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as e:
        raise BenchError(f"--device {device!r} is not usable here ({str(e).splitlines()[0]})") from None


def _todo_or_skip(run, out, force, todo, skipped):
    from .reporting.records import read_run
    path = run.path(out)
    if path.exists() and not force:
        try:
            if read_run(path)["config_hash"] == run.hash:
                return todo, skipped + 1
        except BenchError:
            pass                     # unreadable: run it again
    todo.append(run)
    return todo, skipped


def stream_settings(spec, encoder, known) -> dict:
    """The stream's ``[settings.<encoder>]``, validated (method names and options), or ``{}``."""
    from . import catalogue
    settings = spec.settings.get(encoder, {}) if encoder else {}
    for key, opts in settings.items():
        if key == "train":
            continue
        where = f"stream file {spec.path} [settings.{encoder}.{key}]"
        if key not in known:
            raise BenchError(f"{where}: unknown method {key!r}; available: {', '.join(known)}")
        try:
            catalogue.get(key).resolve(opts)
        except BenchError as e:
            raise BenchError(f"{where}: {e}") from None
    return settings


def method_variants(method, stream_opts, tuned_opts, tuned_source, sets, points, label=None):
    """The variants of one method to run: ``[(options, label or None, {option: source})]``. Options resolve
    in order: method defaults < the stream's settings < the stream's tuned settings < ``--set`` / ``--grid``;
    the base (without the last layer) keeps the plain method name."""
    from . import catalogue
    cls = catalogue.get(method)
    for p in {k for point in points for k in point}:
        if p in sets:
            raise BenchError(f"{method}.{p} is given by both --set and --grid")
    try:
        base = cls.resolve({**stream_opts, **tuned_opts})
    except BenchError as e:
        raise BenchError(f"tuned settings {tuned_source}: {e}") from None
    out = []
    for point in points:
        opts = cls.resolve({**stream_opts, **tuned_opts, **sets, **point})
        sources = {k: "stream settings" for k in stream_opts}
        sources.update({k: f"tuned ({tuned_source})" for k in tuned_opts} if tuned_source else {})
        sources.update({k: "--set" for k in sets})
        sources.update({k: "--grid" for k in point})
        out.append((opts, label or variant_label(method, opts, base), sources))
    return out


def parse_labels(items: list[str], known: list[str], grids: dict) -> dict[str, str]:
    out = {}
    for item in items:
        method, eq, name = item.partition("=")
        if not eq or method not in known:
            raise BenchError(f"--label expects METHOD=NAME with a known method, got {item!r}")
        if method in grids:
            raise BenchError(f"--label {item!r}: {method} has a --grid, whose variants are labelled by their values")
        out[method] = check_label(name, f"--label {item!r}")
    return out


def check_same_stream(stream_dir: Path, spec) -> None:
    """Refuse to add runs to a results folder that holds runs of another stream file of the same name."""
    from .reporting.records import stream_files_of
    other = stream_files_of(stream_dir) - {spec.sha256}
    if other:
        raise BenchError(f"{stream_dir} holds runs of another stream file named {spec.name!r} (content "
                         f"{sorted(other)[0]}, this one {spec.sha256}); write to another --out, or delete "
                         f"{stream_dir}/runs to start over")



def execute(p: Plan, args) -> list:
    """Train the planned runs; each record is written atomically as soon as its run finishes. A failed run
    does not stop the others; the failures (run, message) are returned and listed in ``failures.json`` of the
    results folder (rewritten by every sweep that trains something)."""
    from tqdm import tqdm

    from .claims import Claims
    from .executor import run_local, run_ray
    from .reporting.records import write_run
    if not p.todo:
        return []
    # a live bar on a terminal; in logs (CI, redirected stderr) one line per finished run instead
    finished = []
    with tqdm(total=len(p.todo), desc="runs", unit="run", file=sys.stderr, disable=None) as bar:

        claims = Claims(args.out, force=args.force)

        def started(run):
            bar.set_postfix_str(f"{run.method} seed {run.seed}")

        def skipped(run, why):
            bar.update(1)
            print(f"skipped: {run.row} seed {run.seed}: {why}", file=sys.stderr)

        def save(run, record):
            write_run(run.path(args.out), record)
            claims.release(run)
            done = f"{run.method} seed {run.seed}: R@10 {fmt(record['summary']['r10'])}"
            bar.set_postfix_str(done)
            bar.update(1)
            finished.append(run)
            if bar.disable:
                print(f"[{len(finished)}/{len(p.todo)}] {done} "
                      f"({record['timings']['train_seconds']:.1f} s training)", file=sys.stderr)
            for w in record.get("warnings", ()):       # above the live bar, or one line in a log
                tqdm.write(f"warning: {run.row} seed {run.seed}: {w}", file=sys.stderr)

        def failed(run, message):
            claims.release(run)
            bar.update(1)
            print(f"failed: {run.row} seed {run.seed}: {message}", file=sys.stderr)

        try:
            if getattr(args, "executor", "local") == "ray":
                failures = run_ray(p.todo, args.jobs, args.threads, started, save, args.address, failed,
                                   claims.take, skipped)
            else:
                failures = run_local(p.todo, min(args.jobs, len(p.todo)), args.threads, started, save, failed,
                                     claims.take, skipped)
        finally:
            claims.close()
    import json

    from .files import write_atomic
    write_atomic(p.stream_dir / "failures.json", json.dumps(
        [{"label": r.row, "seed": r.seed, "config_hash": r.hash, "error": m} for r, m in failures], indent=1) + "\n")
    return failures


def answered(args) -> bool:
    """``--list`` and ``--describe`` print and end the command (bench.run and bench.tune alike)."""
    if args.list:
        print(list_all())
    elif args.describe:
        from .describe import describe
        print(describe(args.describe))
    return bool(args.list or args.describe)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli(lambda: _main(args), "interrupted: finished runs are saved; rerun the same command to continue")


def _main(args) -> int:
    if answered(args):
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = plan(args)                  # validates everything, --threads included, before any work
    if p.todo:
        import torch
        torch.set_num_threads(args.threads)
    print(f"{p.stream.name}: {len(p.stream.steps)} steps, methods {', '.join(p.methods)}, "
          f"seeds {', '.join(map(str, p.seeds))}; {len(p.todo)} runs to do, {p.skipped} already done",
          file=sys.stderr)
    failures = execute(p, args)
    from .reporting.rebuild import rebuild, up_to_date
    if any(p.stream_dir.glob("runs/*/seed*.json")):
        if not p.todo and up_to_date(p.stream_dir, figures=not args.no_figures):
            table = (p.stream_dir / "table.md").read_text()     # nothing new since the last rebuild
        else:
            table = rebuild(p.stream_dir, figures=not args.no_figures)     # from what finished
        print(table)
        print(f"results in {p.stream_dir}/", file=sys.stderr)
    if failures:
        for run, message in failures:
            print(f"error: {run.row} seed {run.seed} failed: {message}", file=sys.stderr)
        print(f"error: {len(failures)} of {len(p.todo)} runs failed (listed in {p.stream_dir / 'failures.json'}); "
              "the others are saved and in the table", file=sys.stderr)
        return 1
    return 0


def fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    sys.exit(main())
