"""``python -m bench.run``: run methods on a stream over seeds; write run records, summary, table, figures.

Three stages: ``plan`` turns the arguments into ``RunSpec``s (validating everything before any work and
skipping finished runs), ``execute`` trains the rest and saves each record as it finishes, ``rebuild``
writes the derived files (``bench.reporting``).
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ArgumentParser, BenchError, run_cli
from .executor import Sweep
from .request import DEFAULT_SEEDS, DEFAULT_STREAM, Request
from .settings import grid_points
from .tuned import load_tuned, source_name, warn_if_other_training, warn_if_tuned_on_reported

MAX_VARIATIONS = 100      # task orders or worlds of one sweep (each multiplies its runs)

if TYPE_CHECKING:
    from .streams import StreamSpec


def parse_args(argv):
    return build_parser().parse_args(argv)


def build_parser(prog="python -m bench.run",
                 description="Run continual multimodal contrastive learning methods on a stream of modality-pair "
                             "steps.", seeds_help: str | None = None, worlds_help: str | None = None
                 ) -> argparse.ArgumentParser:
    """The command line of bench.run, which bench.tune shares (with its own meaning of --seeds and --worlds)."""
    p = ArgumentParser(prog=prog, description=description)
    p.add_argument("--methods", default="all", help="'all' or a comma-separated list (see --list)")
    p.add_argument("--stream", default=DEFAULT_STREAM, help="built-in stream name or path of a stream .toml "
                   f"(default: {DEFAULT_STREAM})")
    p.add_argument("--encoder", help="feature banks to read for streams of banks (e.g. paper): imagebind, "
                   "languagebind, unibind or any bank name under --banks")
    p.add_argument("--banks", default="features", help="folder of feature banks: <banks>/<encoder>/<source>/<split>.h5 "
                   "(default: features/)")
    p.add_argument("--seeds", default=DEFAULT_SEEDS, help=seeds_help or "N (seeds 0..N-1) or a comma-separated "
                   f"list i,j (default: {DEFAULT_SEEDS})")
    p.add_argument("--orders", type=int, default=1, metavar="K", help="task orders per seed: the stream file's "
                   "and K−1 seeded permutations of its steps (default 1); the table's intervals and paired "
                   "differences are stratified by order × world")
    p.add_argument("--worlds", type=int, default=1, metavar="K", help=worlds_help or "worlds per seed: the stream "
                   "file's and K−1 others — simulated streams from other simulation seeds (new features, test and "
                   "validation pairs), bank streams with other test and validation draws (default 1)")
    p.add_argument("--eval-every", type=int, metavar="N", help="also evaluate the old tasks every N iterations "
                   "inside each step, on the same test pairs (the stability gap: StabGap_R10, AlignDev_max and a "
                   "figure; the curves go into the run files; costs evaluation time, see README)")
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
    p.add_argument("--address", help="Ray cluster address for --executor ray (e.g. auto, or HOST:6379); --jobs "
                   "then bounds the runs in flight (default: as many as the cluster holds)")
    p.add_argument("--max-retries", type=int, metavar="N", help="--executor ray: start a run again up to N times "
                   "when the system loses it (its worker or node died; default 3); a run's own error is not retried")
    p.add_argument("--gpus-per-run", type=float, metavar="G", help="--executor ray with --device cuda: GPUs each "
                   "run asks Ray for (default 1; a fraction shares a GPU between runs)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--force", action="store_true", help="rerun runs whose result file already exists")
    p.add_argument("--wait", action="store_true", help="when another runner on the same --out holds some of "
                   "the runs, wait for it to finish them (or to die: they are then trained here) instead of "
                   "ending with exit code 3")
    p.add_argument("--no-figures", action="store_true", help="write summary.csv and table.md only")
    p.add_argument("--compare", metavar="ROW", help="the row the table marks others against (paired "
                   "differences, probability of improvement; default: the naive method, vanilla)")
    p.add_argument("--log", help="experiment tracking, comma-separated: tensorboard, csv, wandb (offline unless "
                   "WANDB_MODE says otherwise); logs go to <out>/<stream>/logs/<method>/seed<k>/")
    p.add_argument("--save-heads", action="store_true", help="save the heads after every step of the runs that "
                   "train: <out>/<stream>/heads/<method>/seed<k>/step<t>.pt (torch.load gives {modality: "
                   "{weight, bias}}); finished runs are not retrained (add --force)")
    p.add_argument("--list", action="store_true", help="list methods and streams and exit")
    p.add_argument("--describe", metavar="METHOD", help="print one method's paper, adaptation, options (defaults, "
                   "allowed values, search space) and tuned values per stream, and exit")
    return p


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
    stream: StreamSpec
    stream_dir: Path
    todo: list          # RunSpec, in order
    skipped: int
    methods: list[str]
    seeds: list[int]
    runs: list          # every planned RunSpec (to do or already done), in order
    jobs: int | None    # runs in flight at most (--jobs, or one per core; None: a Ray cluster's resources)


def plan(request: Request) -> Plan:
    """Every run the request asks for, validated before any work; finished runs (same configuration hash)
    are skipped unless ``force``. Settings resolve through ``bench.settings`` (its five layers)."""
    from dataclasses import asdict, replace

    from . import catalogue, settings, streams
    from .config import FLAGS, RunSpec, train_problem
    from .features.bank import bank_shas
    from .files import check_name, check_writable

    known = catalogue.names()
    names = list(request.methods) if request.methods is not None else known
    for m in names:
        catalogue.get(m)
    ex = request.execution
    check_device_name(ex.device)
    check_ray_options(ex)
    jobs = ex.jobs if ex.jobs is not None or (ex.executor == "ray" and ex.address) else default_jobs(ex.device)
    if (jobs is not None and jobs < 1) or ex.threads < 1:
        raise BenchError("--jobs and --threads must be >= 1")
    check_writable(request.out)
    if not request.seeds:
        raise BenchError("--seeds lists no seed")
    for m in request.sets:                  # validates names and values, also of methods not run
        catalogue.get(m).resolve(dict(request.sets[m]))
    for flag, given in (("--set", request.sets), ("--grid", request.grids), ("--label", request.labels)):
        for m in given:
            if m not in names:
                raise BenchError(f"{flag} names method {m!r}, which --methods does not run (it runs "
                                 f"{', '.join(names)})")
    for flag, k in (("--orders", request.orders), ("--worlds", request.worlds)):
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_VARIATIONS:
            raise BenchError(f"{flag} must be an integer from 1 to {MAX_VARIATIONS}, got {k}")
    eval_every = request.eval_every
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1):
        raise BenchError(f"--eval-every must be a positive number of iterations, got {eval_every}")
    spec = streams.load(request.stream)
    if request.orders > math.factorial(len(spec.steps)):
        raise BenchError(f"--orders {request.orders}: stream {spec.name!r} has {len(spec.steps)} steps, so "
                         f"{math.factorial(len(spec.steps))} task orders")
    encoder = request.encoder
    if encoder is not None:
        check_name(encoder, "--encoder")
    if encoder and not spec.bank_sources and encoder not in spec.settings:
        raise BenchError(f"--encoder {encoder}: stream {spec.name!r} reads no feature banks and has no "
                         f"[settings.{encoder}]; --encoder applies to streams of banks (e.g. paper)")
    per_encoder = settings.encoder_settings(spec, encoder, known)
    split = request.split
    # tuning (validation split) starts from the untuned base; its runs never read tuned settings
    tuned, tuned_file, tuned_data = ({}, None, {}) if request.untuned or split != "test" else load_tuned(spec, encoder)
    tuned_source = source_name(tuned_file, spec) if tuned_file else None
    # a method the user sets or grids is chosen by hand; one left at its defaults beside tuned ones is noted
    untuned_rows = [m for m in names if tuned_file and m not in tuned and m not in request.sets
                    and m not in request.grids and catalogue.get(m).search_space]
    if untuned_rows:
        print(f"note: {tuned_source} has no tuned settings for {', '.join(untuned_rows)}: "
              f"{'it runs' if len(untuned_rows) == 1 else 'they run'} at the defaults next to tuned methods "
              f"(marked in the table; tune with python -m bench.tune --methods {','.join(untuned_rows)})",
              file=sys.stderr)
    tunable = [m for m in names if catalogue.get(m).search_space and m not in request.sets and m not in request.grids]
    if split == "test" and not request.untuned and tuned_file is None and tunable:
        print(f"note: stream {spec.name!r}{f' with --encoder {encoder}' if encoder else ''} has no tuned settings: "
              f"{', '.join(tunable[:4])}{', …' if len(tunable) > 4 else ''} run at their defaults; "
              f"python -m bench.tune --stream {request.stream}{f' --encoder {encoder}' if encoder else ''} tunes them on "
              "validation pairs", file=sys.stderr)
    points = request.candidates or {m: grid_points(dict(request.grids.get(m, {}))) for m in names}
    variants = {m: settings.method_variants(m, per_encoder.get(m, {}), tuned.get(m, {}), tuned_source,
                                            request.sets.get(m, {}), points.get(m, [{}]), request.labels.get(m))
                for m in names}
    for key, value in asdict(request.training).items():     # the command line's own values, blamed on their flag
        problem = None if value is None else train_problem(key, value)
        if problem:
            raise BenchError(f"{FLAGS[key]} {problem}")
    train, loss = settings.training(spec, per_encoder, request), settings.loss(request)
    warn_if_other_training(tuned_data, tuned_file, asdict(train), asdict(loss))
    warn_if_tuned_on_reported(tuned_data, tuned_file, names, request.seeds, request.world_range)
    if device_type(ex.device) == "meta":
        raise BenchError("--device meta holds no values (the test suite uses it to check device handling); "
                         "choose cpu, cuda or mps")
    # the banks' content hashes are part of each run's configuration: read from the files' attributes,
    # so deciding what is finished needs neither torch nor the features
    shas = bank_shas(spec, encoder, request.banks, ("train", "test") if split == "test" else ("train",))
    todo: list = []
    skipped = 0
    out = Path(request.out)
    result_name = RunSpec(spec, names[0], {}, 0, encoder=encoder, untuned=request.untuned).result_name
    stream_dir = out / check_name(result_name, "the results folder's name")
    if split == "validation":
        stream_dir = stream_dir / "tuning"
    check_same_stream(stream_dir, spec)
    every: list = []
    rows_of: dict[str, str] = {}
    for m in names:
        for opts, label, sources in variants[m]:
            row = check_name(label or m, f"the row name of {m}")     # a registered name or a grid's values
            if row in rows_of:
                raise BenchError(f"{rows_of[row]} and {m} would share the row {row!r} (its run files and table "
                                 "row): give them different --label names")
            rows_of[row] = m
            for seed, order, world in itertools.product(request.seeds, range(request.orders),
                                                         request.world_range):
                run = RunSpec(spec, m, opts, seed, train, loss, device=ex.device, encoder=encoder,
                              banks=request.banks, bank_shas=shas, label=label,
                              option_sources=sources or None, untuned=request.untuned, split=split,
                              tuned=False if m in untuned_rows else None, order=order, world=world,
                              eval_every=eval_every)
                if request.save_heads:
                    run = replace(run, heads_dir=str(run.heads_path(out)))
                if request.log:
                    run = replace(run, log=request.log, log_dir=str(run.log_path(out)))
                every.append(run)
                todo, skipped = _todo_or_skip(run, out, request.force, todo, skipped)
    if request.compare is not None:         # a row planned now or already in the results folder
        from .reporting.compare import check_reference
        check_reference(request.compare, set(rows_of) | {d.name for d in (stream_dir / "runs").glob("*/")},
                        "this table")
    if todo:            # torch and the features only now that something will train
        check_memory(spec)
        if ex.executor == "ray":        # the cluster's nodes build the stream and check the device
            from .features.bank import load_stream_banks
            load_stream_banks(spec, encoder, request.banks, ("train", "test") if split == "test" else ("train",))
        else:
            check_device(ex.device)
            from .runner import get_scenario
            get_scenario(spec, encoder, request.banks, split)     # validates the banks; workers inherit it
    return Plan(spec, stream_dir, todo, skipped, names, list(request.seeds), every, jobs)


def available_memory() -> int | None:
    """Bytes of memory available to new work (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(spec) -> None:
    """Refuse a simulated stream whose features cannot fit in this machine's memory (before any work)."""
    need, have = spec.simulated_bytes(), available_memory()
    if have is not None and need > have:
        raise BenchError(f"stream {spec.name!r} ({spec.path}): simulating its features needs about "
                         f"{need / 2 ** 30:.1f} GiB, and this machine has {have / 2 ** 30:.1f} GiB available; "
                         "lower [simulation] dim or the sources' train/test sizes")


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


# torch's device types (torch.device's parser): a name outside them is refused without importing torch
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "hpu", "mtia", "privateuseone", "ipu", "mkldnn",
                "opengl", "opencl", "ideep", "ve", "fpga", "maia", "lazy", "vulkan")


def check_device_name(device: str) -> None:
    """``--device`` is a torch device's text (``cpu``, ``cuda``, ``cuda:1``, ``mps``, …); checked without torch."""
    import re
    m = re.fullmatch(r"([a-z_]+)(?::(\d+))?", device.strip())
    if not m or m.group(1) not in DEVICE_TYPES:
        raise BenchError(f"--device {device!r} is not a torch device: cpu, cuda, cuda:N, mps or xpu")


def check_ray_options(ex) -> None:
    """The Ray executor's options, torch-free: Ray installed, options only with it, a device Ray can give."""
    ray_only = {"--address": ex.address, "--max-retries": ex.max_retries, "--gpus-per-run": ex.gpus_per_run}
    if ex.executor != "ray":
        for flag, value in ray_only.items():
            if value is not None:
                raise BenchError(f"{flag} {value} is an option of the Ray executor: it goes with --executor ray")
        return
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        raise BenchError("--executor ray needs Ray, which is not installed: pip install 'cmcl-bench[ray]'")
    if ex.max_retries is not None and ex.max_retries < 0:
        raise BenchError(f"--max-retries must be >= 0, got {ex.max_retries}")
    kind = device_type(ex.device)
    if kind not in ("cpu", "cuda"):
        raise BenchError(f"--device {ex.device} with --executor ray: Ray gives runs CPUs or CUDA GPUs (cpu, cuda)")
    if ex.device.strip() != kind:
        raise BenchError(f"--device {ex.device} with --executor ray: Ray chooses each run's GPU; give --device cuda")
    if ex.gpus_per_run is not None:
        if kind != "cuda":
            raise BenchError(f"--gpus-per-run {ex.gpus_per_run:g} goes with --device cuda")
        if not 0 < ex.gpus_per_run or (ex.gpus_per_run > 1 and ex.gpus_per_run != int(ex.gpus_per_run)):
            raise BenchError(f"--gpus-per-run must be a fraction in (0, 1] or a whole number, got {ex.gpus_per_run:g}")


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


def check_same_stream(stream_dir: Path, spec) -> None:
    """Refuse to add runs to a results folder that holds runs of another stream file of the same name."""
    from .reporting.records import stream_files_of
    other = stream_files_of(stream_dir) - {spec.sha256}
    if other:
        raise BenchError(f"{stream_dir} holds runs of another stream file named {spec.name!r} (content "
                         f"{sorted(other)[0]}, this one {spec.sha256}); write to another --out, or delete "
                         f"{stream_dir}/runs to start over")



class _Sweep(Sweep):
    """``bench.run``'s side of an executor (``bench.executor.Sweep``): claims each run in the results folder,
    saves its record atomically as it arrives, and shows progress — a live bar on a terminal, one line per
    finished run in logs (CI, redirected stderr)."""

    def __init__(self, p: Plan, request: Request, bar):
        from .claims import Claims
        super().__init__()
        self.p, self.out, self.bar = p, request.out, bar
        self.claims, self.done = Claims(request.out, force=request.force), 0
        self.wait, self.told = request.wait, set[tuple[str, int]]()

    def claim(self, run) -> bool:
        from .claims import CLAIMED
        why = self.claims.take(run)
        if why == CLAIMED:
            self.elsewhere.append(run)
            if (run.row, run.seed) not in self.told:
                self.told.add((run.row, run.seed))
                say(f"{'waiting' if self.wait else 'skipped'}: {run.row} {run.run_text}: {why}")
        elif why:
            self.bar.update(1)
            say(f"skipped: {run.row} {run.run_text}: {why}")
        return why is None

    def started(self, run) -> None:
        self.bar.set_postfix_str(f"{run.row} {run.run_text}")

    def finished(self, run, record) -> None:
        from tqdm import tqdm

        from .reporting.records import write_run
        write_run(run.path(self.out), record)
        self.claims.release(run)
        done = f"{run.row} {run.run_text}: R@10 {fmt(record['summary']['r10'])}"
        self.bar.set_postfix_str(done)
        self.bar.update(1)
        self.done += 1
        if self.bar.disable:
            say(f"[{self.done}/{len(self.p.todo)}] {done} ({record['timings']['train_seconds']:.1f} s training)")
        for w in record.get("warnings", ()):       # above the live bar, or one line in a log
            tqdm.write(f"warning: {run.row} {run.run_text}: {w}\n", file=sys.stderr, end="")

    def failed(self, run, error) -> str:
        message = super().failed(run, error)
        self.claims.release(run)
        self.bar.update(1)
        say(f"failed: {run.row} {run.run_text}: {message}")
        return message


def say(text: str) -> None:
    """One line on stderr in one write: print() writes the text and its newline apart, and a Ctrl-C between
    the two would glue the next message (``interrupted: …``) onto the line."""
    sys.stderr.write(text + "\n")


@dataclass
class Outcome:
    """What a sweep left undone: failed runs (run, message) and runs another runner still holds."""

    failures: list
    elsewhere: list


WAIT_POLL = 2.0       # seconds between looks at runs another runner holds (with --wait)


def execute(p: Plan, request: Request) -> Outcome:
    """Train the planned runs on the request's executor; each record is written atomically as soon as its
    run finishes. A failed run does not stop the others; the failures (run, message) are listed in
    ``failures.json`` of the results folder (rewritten by every sweep that trains something). Runs another
    live runner holds are left to it (``Outcome.elsewhere``) or, with ``request.wait``, waited for: finished
    there, or trained here once that runner is gone."""
    import time
    from dataclasses import replace

    from tqdm import tqdm

    from .executor import EXECUTORS
    if not p.todo:
        return Outcome([], [])
    with tqdm(total=len(p.todo), desc="runs", unit="run", file=sys.stderr, disable=None) as bar:
        sweep = _Sweep(p, request, bar)
        execution = replace(request.execution, jobs=p.jobs)
        try:
            todo = p.todo
            while todo:
                EXECUTORS[request.execution.executor](todo, sweep, execution)
                if not request.wait:
                    break
                todo, sweep.elsewhere = sweep.elsewhere, []
                if todo:
                    time.sleep(WAIT_POLL)
        finally:
            sweep.claims.close()
    failures = sweep.failures
    import json

    from .files import write_atomic
    write_atomic(p.stream_dir / "failures.json", json.dumps(
        [{"label": r.row, "seed": r.seed, "config_hash": r.hash, "error": m} for r, m in failures], indent=1) + "\n")
    return Outcome(failures, sweep.elsewhere)


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
    from functools import partial  # not a lambda: one frame less between the command line and a hook
    return run_cli(partial(_main, args), "interrupted: finished runs are saved; rerun the same command to continue")


def _main(args) -> int:
    if answered(args):
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    request = Request.from_args(args)
    p = plan(request)               # validates everything, --threads included, before any work
    if p.todo:
        import torch
        torch.set_num_threads(request.execution.threads)
    print(f"{p.stream.name}: {len(p.stream.steps)} steps, methods {', '.join(p.methods)}, "
          f"seeds {', '.join(map(str, p.seeds))}; {len(p.todo)} runs to do, {p.skipped} already done",
          file=sys.stderr)
    outcome = execute(p, request)
    failures = outcome.failures
    from .reporting.rebuild import rebuild, up_to_date
    if any(p.stream_dir.glob("runs/*/seed*.json")):
        if not p.todo and up_to_date(p.stream_dir, figures=not request.no_figures, reference=request.compare):
            table = (p.stream_dir / "table.md").read_text()     # nothing new since the last rebuild
        else:
            table = rebuild(p.stream_dir, figures=not request.no_figures, reference=request.compare)
        print(table)
        print(f"results in {p.stream_dir}/", file=sys.stderr)
    if failures:
        for run, message in failures:
            print(f"error: {run.row} {run.run_text} failed: {message}", file=sys.stderr)
        print(f"error: {len(failures)} of {len(p.todo)} runs failed (listed in {p.stream_dir / 'failures.json'}); "
              "the others are saved and in the table", file=sys.stderr)
    if outcome.elsewhere:
        held = ", ".join(f"{r.row} {r.run_text}" for r in outcome.elsewhere[:4])
        print(f"incomplete: {len(outcome.elsewhere)} runs are held by another runner still at work ({held}"
              f"{', …' if len(outcome.elsewhere) > 4 else ''}); the table has the runs finished so far: rerun "
              "when it is done, or add --wait", file=sys.stderr)
    return 1 if failures else 3 if outcome.elsewhere else 0


def fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    sys.exit(main())
