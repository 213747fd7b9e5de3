"""The training loop: one experience at a time, method hooks around a lean step.

The hot loop indexes the feature matrices with a permutation (no DataLoader, no per-sample Python) and
calls only the hooks a method overrides, so Vanilla costs what a bare PyTorch loop costs
(``benchmarks/trainer_overhead.py`` measures the ratio).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from . import seeds
from .budget import state_bytes
from .config import LossConfig, TrainConfig
from .devices import host, is_data_free
from .errors import BenchError
from .heads import Heads
from .loss import info_nce
from .method import HOOKS, Context, Method
from .scenario import Scenario, pair_tensors

FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")     # device types with torch's fused AdamW and SGD kernels


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The step's optimiser over the trained heads' parameters; with ``decay_bias = false`` the biases
    (1-d parameters) form a second group without weight decay."""
    params = list(params)
    if cfg.decay_bias or cfg.weight_decay == 0:
        groups = [{"params": params}]
    else:
        groups = [{"params": [p for p in params if p.ndim > 1]},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    # The heads are a handful of small tensors: an update's cost is its number of operations, so the fused
    # kernel (one per parameter) where the device has one, else the single-tensor path (faster than foreach
    # on CPU here).
    fused = bool(params) and params[0].device.type in FUSED_DEVICES
    fast: dict[str, Any] = dict(fused=True) if fused else dict(foreach=False)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **fast)
    return torch.optim.SGD(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, **fast)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, iterations: int):
    """``linear``: the learning rate of iteration i (from 0) is ``lr · (1 − i / iterations)`` (the Hugging Face
    linear schedule without warm-up); ``constant``: None."""
    if cfg.schedule == "constant" or iterations == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.0, (iterations - i) / iterations))


def clip_gradients(params, clip: float) -> torch.Tensor:
    """Clip the parameters' global gradient norm to ``clip``; return the factor the gradients were scaled
    by (torch's own rule, a tensor on their device: no host read), which a method working on the batch's
    factors applies alike."""
    total = torch.nn.utils.clip_grad_norm_(params, clip, foreach=False)
    return (clip / (total + 1e-6)).clamp(max=1.0)


def n_batches(sizes: list[int], batch_size: int) -> int:
    """How many batches ``epoch_batches`` yields for these task sizes (chunks of one pair are dropped)."""
    return sum(n // batch_size + (1 if n % batch_size >= 2 else 0) for n in sizes)


def epoch_batches(sizes: list[int], batch_size: int, gen: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """Per-pair batches: each task's samples are shuffled and cut into batches (a last batch of one pair is
    dropped: InfoNCE needs two), then the batches of all tasks are interleaved in random order."""
    out: list[tuple[int, torch.Tensor]] = []
    for slot, n in enumerate(sizes):
        perm = torch.randperm(n, generator=gen)
        out.extend((slot, chunk) for chunk in perm.split(batch_size) if len(chunk) >= 2)
    if len(sizes) > 1:
        out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
    return out


RISE, SPIKE = 1.25, 10.0    # flagged: the loss ends RISE× above its start, or peaks SPIKE× above its median


def loss_record(losses: list[list[float]], epochs: int) -> dict:
    """A step's loss summary from its per-iteration losses (row 0: the optimised loss, InfoNCE plus the
    method's terms; row 1: the InfoNCE alone): the mean per epoch of each; ``loss_start`` and ``loss_end``
    (means of the first and the last tenth of the iterations), ``loss_median`` and ``loss_peak``; and
    ``loss_rose`` when the loss ended more than ``RISE`` times above its start, peaked more than ``SPIKE``
    times above its median, or is not finite — unstable training (e.g. a learning rate far too high) that
    the recall table alone would not reveal. (Start and median, not the first batch: a method that
    interleaves old and new pairs, such as joint, starts on whichever pair comes first.)"""
    import math
    n = len(losses[0])
    per = max(1, n // max(1, epochs))
    cuts = [(k * per, n if k == epochs - 1 else (k + 1) * per) for k in range(max(1, min(epochs, n)))]
    mean = lambda xs: sum(xs) / len(xs)                                 # noqa: E731
    out: dict[str, Any] = {"loss": [mean(losses[0][a:b]) for a, b in cuts], "infonce": [mean(losses[1][a:b]) for a, b in cuts]}
    w = max(1, n // 10)
    values = sorted(losses[0])
    start, end, median, peak = mean(losses[0][:w]), mean(losses[0][-w:]), values[n // 2], values[-1]
    out.update(loss_start=start, loss_end=end, loss_median=median, loss_peak=peak)
    if not all(math.isfinite(v) for v in (start, end, peak)) or end > RISE * abs(start) or peak > SPIKE * abs(median):
        out["loss_rose"] = True
    bad = next((i for i, v in enumerate(losses[0]) if not math.isfinite(v)), None)
    if bad is not None:           # where the loss first overflowed, and whether the InfoNCE part had too
        out["nonfinite_at"] = {"iteration": bad + 1, "infonce": losses[1][bad] if math.isfinite(losses[1][bad])
                               else None, "last_finite_loss": losses[0][bad - 1] if bad else None}
    return out


class SourceView(dict):
    """The current step's source, every modality's training features, moved to the heads' device on first
    access (most methods never read it). ``declared``: the modalities the stream file gives the source,
    in its order (a bank may lack some of them)."""

    def __init__(self, features: dict[str, torch.Tensor], device: torch.device, declared=()):
        super().__init__(features)
        self.declared = tuple(declared)
        self._device, self._moved = device, set[str]()

    def __getitem__(self, m: str) -> torch.Tensor:
        x = super().__getitem__(m)
        if m not in self._moved:
            x = x.to(self._device)
            super().__setitem__(m, x)
            self._moved.add(m)
        return x


@dataclass
class StepPlan:
    """One experience's training, as ``Trainer.begin_experience`` set it up: the steps whose data it iterates
    over (``tasks``; empty: no training), their (x_a, x_b) and pairs, the batch-order generator, the learning-rate
    schedule, the number of iterations planned, the clipped parameters and the start time."""

    step: int
    tasks: list[int]
    data: list[tuple[torch.Tensor, torch.Tensor]]
    pairs: list[tuple[str, str]]
    gen: torch.Generator | None
    schedule: Any                   # a torch LR scheduler, or None (constant)
    planned: int
    clipped: list
    t0: float


class Trainer:
    def __init__(self, scenario: Scenario, method: Method, heads: Heads, train_cfg: TrainConfig,
                 loss_cfg: LossConfig, seed: int, device: torch.device | str = "cpu"):
        self.scenario, self.method, self.heads = scenario, method, heads
        self.cfg, self.loss_cfg, self.seed = train_cfg, loss_cfg, seed
        self.device = torch.device(device)
        self.ctx = Context(heads=heads, loss_cfg=loss_cfg, device=self.device, seed=seed,
                           tasks=tuple(t.step for t in scenario.tasks))
        self.hooks = {h: getattr(method, h) for h in HOOKS if getattr(type(method), h) is not getattr(Method, h)}
        self.state_peak = 0          # bytes: the largest extra state the method held at a step's end (bench.budget)
        self._train: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(scenario.tasks)

    def train_data(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._train[j]
        if cached is None:
            xa, xb = pair_tensors(self.scenario.benchmark.train_stream[j].dataset, self.scenario.tasks[j])
            cached = self._train[j] = (xa.to(self.device), xb.to(self.device))
        return cached

    def _call(self, hook: str):
        fn = self.hooks.get(hook)
        if fn is not None:
            fn(self.ctx)

    def begin_experience(self, step: int, train: tuple[torch.Tensor, torch.Tensor] | None = None) -> StepPlan:
        """Set up experience ``step`` (the method's choice of tasks and heads, the optimiser, the schedule, the
        batch generator) and call ``before_training_exp``; the plan is also ``self.plan`` until the next
        experience. ``train``: the step's (x_a, x_b) when the caller
        holds them (``bench.bridge``: the Avalanche experience's own pairs); default the benchmark's."""
        ctx, cfg, task = self.ctx, self.cfg, self.scenario.tasks[step]
        ctx.step, ctx.task = step, task.step
        ctx.train = self.train_data(step) if train is None else train
        ctx.source_features = SourceView(task.train_source.features, self.device,
                                         self.scenario.spec.sources[task.step.source].get("modalities", ()))
        tasks = self.method.train_tasks(ctx)
        if any(j != step for j in tasks) and not self.method.sees_old_data:
            raise BenchError(f"method {self.method.name!r} asked to train on steps {tasks} at step {step + 1}: "
                             "only a method declaring sees_old_data (a reference such as joint) may")
        mods = self.method.trainable_modalities(ctx, tasks) if tasks else []
        base = make_optimizer(self.heads.parameters_of(mods), cfg) if mods else None
        ctx.optimizer = None if base is None else self.method.wrap_optimizer(base, ctx)
        clipped = self.heads.parameters_of(mods)
        t0 = time.perf_counter()
        self._call("before_training_exp")
        if not tasks or cfg.epochs <= 0:
            self.plan = StepPlan(step, [], [], [], None, None, 0, clipped, t0)
            return self.plan
        assert base is not None                 # tasks to train name heads to optimise
        data = [ctx.train if j == step else self.train_data(j) for j in tasks]
        planned = cfg.epochs * n_batches([len(d[0]) for d in data], cfg.batch_size)
        self.plan = StepPlan(step, tasks, data, [self.scenario.tasks[j].pair for j in tasks],
                             seeds.generator(self.seed, "batches", step), make_schedule(base, cfg, planned),
                             planned, clipped, t0)
        return self.plan

    def end_experience(self) -> None:
        # the method's extra state at its largest: before its end-of-step hook (LwF still holds its snapshot)
        # and after it (a buffer has just taken the step's pairs)
        self.state_peak = max(self.state_peak, state_bytes(self.method, self.heads))
        self._call("after_training_exp")
        self.state_peak = max(self.state_peak, state_bytes(self.method, self.heads))
        ctx = self.ctx
        ctx.xa = ctx.xb = ctx.za = ctx.zb = ctx.loss = ctx.source_features = None

    def train_experience(self, step: int, every: int | None = None, probe=None) -> dict:
        """Train on experience ``step``; returns its timing record. With ``probe``, ``probe(i)`` is called after
        every ``every``-th iteration i (the within-step evaluations of ``--eval-every``; its time is not
        training time)."""
        cfg = self.cfg
        plan = self.begin_experience(step)
        iters, probing = 0, 0.0
        if plan.tasks:
            data, tasks, pairs, gen, batch = plan.data, plan.tasks, plan.pairs, plan.gen, self.train_batch
            assert gen is not None
            # every iteration's losses stay on the device (no host synchronisation in the loop): the
            # optimised loss (InfoNCE and the method's terms) and the InfoNCE alone
            losses = torch.zeros(2, plan.planned, device=self.device)
            for _ in range(cfg.epochs):
                for slot, idx in epoch_batches([len(d[0]) for d in data], cfg.batch_size, gen):
                    xa_all, xb_all = data[slot]
                    losses[0, iters], losses[1, iters] = batch(tasks[slot], pairs[slot], xa_all[idx], xb_all[idx])
                    iters += 1
                    if probe is not None and every and iters % every == 0:
                        t = time.perf_counter()
                        probe(iters)
                        probing += time.perf_counter() - t
        self.end_experience()
        out = {"step": step, "train_seconds": time.perf_counter() - plan.t0 - probing, "iterations": iters,
               **({"within_seconds": probing} if probe is not None else {})}
        if iters and not is_data_free(self.device):
            out.update(loss_record(host(losses[:, :iters]).tolist(), cfg.epochs))
        return out

    # The per-batch step, in phases named after the hook points where they run. ``train_batch`` is the whole
    # step; ``bench.bridge`` calls the phases at Avalanche's hook points of the same names, whose template
    # does the forward pass, backward pass and optimiser step between them. Each phase calls only the hooks a
    # method overrides (Vanilla pays for none).

    def overrides(self, hook: str) -> bool:
        return hook in self.hooks

    def train_batch(self, task: int, pair: tuple[str, str], xa: torch.Tensor, xb: torch.Tensor):
        """One iteration on a batch of step ``task``'s pair: forward, InfoNCE, the method's terms, backward,
        clipping, the optimiser's step, the schedule's step. Returns (the optimised loss, the InfoNCE alone),
        detached, on the device."""
        ctx = self.ctx
        opt = ctx.optimizer
        assert opt is not None                  # begin_experience made it: this step trains
        if self.method.uses_closure:
            self.before_update()
            opt.step(self.closure(opt, task, pair[0], pair[1], xa, xb))
            self.after_update()
            assert ctx.loss is not None         # the closure set it
            return ctx.loss.detach(), ctx.infonce
        linears = self.heads.linears
        opt.zero_grad(set_to_none=True)        # before the forward pass, as Avalanche's template does
        za, zb = linears[pair[0]](xa), linears[pair[1]](xb)
        infonce = info_nce(za, zb, self.loss_cfg)
        loss = self.before_backward(task, xa, xb, za, zb, infonce)
        loss.backward()
        self.after_backward()
        self.before_update()
        opt.step()
        self.after_update()
        return loss.detach(), infonce.detach()

    def before_backward(self, task: int, xa, xb, za, zb, loss: torch.Tensor) -> torch.Tensor:
        """The batch into the method's context and its ``before_backward``: the loss with the method's terms."""
        if not self.hooks:
            return loss
        ctx = self.ctx
        ctx.batch_task, ctx.xa, ctx.xb, ctx.za, ctx.zb, ctx.loss = task, xa, xb, za, zb, loss
        self._call("before_backward")
        return ctx.loss

    def after_backward(self) -> None:
        """The run's gradient clipping (before any method sees the gradients), then ``after_backward``."""
        if self.cfg.clip_grad_norm is not None:
            self.ctx.grad_scale = clip_gradients(self.plan.clipped, self.cfg.clip_grad_norm)
        self._call("after_backward")

    def before_update(self) -> None:
        self._call("before_update")

    def after_update(self) -> None:
        """``after_update``, then the learning-rate schedule's step."""
        self._call("after_update")
        if self.plan.schedule is not None:
            self.plan.schedule.step()

    def closure(self, opt, task, a, b, xa, xb):
        """For optimisers that re-evaluate the loss (sharpness-aware ones such as C-Flat), called as
        ``opt.step(closure)``: the closure recomputes forward, loss (with the method's terms) and backward
        (with the run's clipping), and returns the loss."""
        ctx, linears, call = self.ctx, self.heads.linears, self._call
        ctx.batch_task, ctx.xa, ctx.xb = task, xa, xb

        def closure():
            ctx.za, ctx.zb = linears[a](xa), linears[b](xb)
            ctx.loss = info_nce(ctx.za, ctx.zb, self.loss_cfg)
            ctx.infonce = ctx.loss.detach()
            call("before_backward")
            opt.zero_grad(set_to_none=True)
            ctx.loss.backward()
            self.after_backward()
            return ctx.loss

        return closure
