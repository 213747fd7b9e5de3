"""The two-way bridge to Avalanche: any registered method as a plugin inside an Avalanche strategy, the
project's metrics for Avalanche's ``EvaluationPlugin``, and a replay storage that never mixes modality pairs.

::

    from bench.bridge import Bridge
    b = Bridge("l2", stream="toy", seed=0)          # planned as ``python -m bench.run`` would plan it
    strategy = b.strategy()                         # avalanche.training.Naive over the heads, plugin included
    strategy.eval(b.benchmark.test_stream)
    for exp in b.benchmark.train_stream:
        strategy.train(exp)
        strategy.eval(b.benchmark.test_stream)
    b.matrices()                                    # equals the run file's "matrices"

The pieces, each usable alone with Avalanche's own strategies and plugins:

- ``PairModel`` (an Avalanche ``MultiTaskModule``): the heads; ``model(x_a, task_labels)`` sends each row
  through the head of its own step's first modality (the task label is the step).
- ``PairInfoNCE``: the criterion ``criterion(z_a, x_b)`` — Avalanche calls it with the model's output and
  the batch's second element; it sends ``x_b`` through the second modality's head and computes the InfoNCE
  within each pair of the batch (never across pairs; a batch of one pair is the runner's loss exactly).
- ``MethodPlugin``: a registered method's hooks at Avalanche's hook points, with the runner's optimiser,
  schedule, clipping and batch order for each experience, so ``Naive`` plus the plugin trains what
  ``bench.run`` trains (tests: the matrices are equal).
- ``PairMetric``: R@k, zero-shot Acc and the alignment deviation of an evaluated experience, computed by
  the runner's evaluator on the experience's test pairs (not on Avalanche's minibatches): the numbers the
  run file holds, reported through Avalanche's loggers.
- ``PairBuffer``: a storage policy for Avalanche's ``ReplayPlugin``: one group per task label (per pair),
  filled by the run's seed; with ``PairModel`` and ``PairInfoNCE`` a replayed pair goes through its own
  heads and is contrasted only with its own pair.

docs/avalanche.md lists which of Avalanche's plugins are safe on pair streams. This module imports
Avalanche at import time: the command line never imports it.
"""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metric_definitions import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name
from avalanche.models import MultiTaskModule
from avalanche.training.storage_policy import BalancedExemplarsBuffer, ExemplarsBuffer

from . import registry, seeds
from .errors import BenchError
from .evaluate import Evaluator
from .heads import Heads
from .loss import info_nce
from .metrics import SUMMARY, final_average
from .scenario import as_run, experience_rows, experience_split, experience_step, pair_tensors
from .trainer import Trainer, epoch_batches, n_batches


def _groups(labels: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """The batch's rows by task label: ``[(label, None)]`` when one label holds them all (no indexing: the
    runner's computation exactly), else ``[(label, row indices), ...]``."""
    uniq = labels.unique().tolist()
    if len(uniq) == 1:
        return [(int(uniq[0]), None)]
    return [(int(t), (labels == t).nonzero().squeeze(1)) for t in uniq]


class PairModel(MultiTaskModule):
    """The heads as an Avalanche model. ``pairs[label]`` is the modality pair of task label ``label`` (the
    steps, then the probes). ``forward(x, task_labels)`` returns the first side's embeddings, each row
    through its own pair's first head (features narrower than the batch — zero-padded by the collate when
    pairs of different widths share a batch — are cut back to the head's width), and remembers the batch's
    groups for the criterion."""

    def __init__(self, heads: Heads, pairs):
        super().__init__()
        self.heads = heads
        self.pairs = [tuple(p) for p in pairs]
        self.groups: list | None = None

    def head(self, label: int, side: int) -> torch.nn.Linear:
        if not 0 <= label < len(self.pairs):
            raise BenchError(f"task label {label} is not a step or probe of this stream (0..{len(self.pairs) - 1})")
        return self.heads[self.pairs[label][side]]

    def embed(self, x: torch.Tensor, groups, side: int) -> torch.Tensor:
        if len(groups) == 1:
            lin = self.head(groups[0][0], side)
            return lin(x if x.shape[1] == lin.in_features else x[:, :lin.in_features])
        out = x.new_empty(len(x), self.heads.out_dim)
        for label, idx in groups:
            lin = self.head(label, side)
            out[idx] = lin(x[idx, :lin.in_features])
        return out

    def adaptation(self, experience):
        """Nothing to grow (the heads are fixed); remembers the task labels trained, as Avalanche's multi-task
        modules do (an experience of pairs has no classes to count)."""
        if self.training:
            self.known_train_tasks_labels |= {int(t) for t in experience.dataset.targets_task_labels.uniques}

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.forward(x, task_label)

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int | None = None) -> torch.Tensor:
        if task_labels is None:
            raise BenchError("PairModel needs each row's task label, and Avalanche passes it only for experiences "
                             "with a 'task_labels' attribute: bench.scenario.annotate(benchmark, scenario) adds it")
        if not torch.is_tensor(task_labels):
            task_labels = torch.full((len(x),), int(task_labels), device=x.device)
        self.groups = _groups(task_labels)
        return self.embed(x, self.groups, 0)


class PairInfoNCE(torch.nn.Module):
    """Avalanche's criterion ``criterion(z_a, x_b)`` for pair streams: ``x_b`` through the second modality's
    head of each row's pair, then InfoNCE within each pair of the batch, averaged weighted by the pairs'
    sizes (a pair with one row in the batch has no negatives and is left out). ``za``/``zb``/``task`` keep the
    last single-pair batch's embeddings and step, for a method's hooks."""

    def __init__(self, model: PairModel, loss_cfg):
        super().__init__()
        self.model, self.loss_cfg = model, loss_cfg
        self.za: torch.Tensor | None = None
        self.zb: torch.Tensor | None = None
        self.task: int | None = None

    def forward(self, za: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        groups = self.model.groups
        if groups is None:
            raise BenchError("PairInfoNCE called before PairModel's forward: use the bridge's model and criterion together")
        zb = self.model.embed(xb, groups, 1)
        if len(groups) == 1:
            self.za, self.zb, self.task = za, zb, groups[0][0]
            return info_nce(za, zb, self.loss_cfg)
        self.za = self.zb = self.task = None
        total, n = za.sum() * 0, 0
        for _, idx in groups:
            if len(idx) >= 2:
                total = total + len(idx) * info_nce(za[idx], zb[idx], self.loss_cfg)
                n += len(idx)
        return total / max(n, 1)


class _Batches:
    """The runner's batches of one experience (``trainer.epoch_batches``: the same generator, so the same
    order), as Avalanche minibatches ``[x_a, x_b, task labels]``; each iteration over it is one epoch."""

    def __init__(self, plan, batch_size: int):
        self.plan, self.batch_size = plan, batch_size

    def __len__(self):
        return n_batches([len(d[0]) for d in self.plan.data], self.batch_size)

    def __iter__(self):
        p = self.plan
        for slot, idx in epoch_batches([len(d[0]) for d in p.data], self.batch_size, p.gen):
            xa, xb = p.data[slot]
            yield [xa[idx], xb[idx], torch.full((len(idx),), p.tasks[slot], device=xa.device)]


class _ClosureStep:
    """The optimiser the strategy steps for a method that re-evaluates the loss (C-Flat): ``step()`` runs the
    method's optimiser with the runner's closure on the strategy's current batch."""

    def __init__(self, plugin: MethodPlugin, strategy, opt):
        self.plugin, self.strategy, self.opt = plugin, strategy, opt
        self.param_groups = opt.param_groups

    def zero_grad(self, set_to_none: bool = True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        s, b = self.strategy, self.plugin.bridge
        task = self.plugin.single_task(s)
        a, bm = b.model.pairs[task]
        return self.opt.step(self.plugin.trainer.closure(self.opt, task, a, bm, s.mb_x, s.mb_y))


class MethodPlugin(SupervisedPlugin):
    """A registered method inside an Avalanche strategy (``Naive`` or any ``SupervisedTemplate`` over a
    ``PairModel`` with ``PairInfoNCE``). For each experience it does what the runner does: the method chooses
    what to train (its tasks and heads), the run's optimiser (AdamW or SGD, weight decay, the linear schedule,
    gradient clipping) replaces the strategy's for the experience (the strategy's own comes back after), and
    the method's hooks run at Avalanche's hook points of the same names. ``own_batches=True`` (default) also
    replaces the strategy's loader with the runner's batch order — the condition for equal results;
    ``False`` keeps Avalanche's loader (and any replay loader another plugin installs). The strategy's
    ``train_mb_size`` and ``train_epochs`` must be the run's."""

    def __init__(self, bridge: Bridge, own_batches: bool = True):
        super().__init__()
        self.bridge, self.own_batches = bridge, own_batches
        self.trainer = Trainer(bridge.scenario, bridge.method, bridge.heads, bridge.run.train, bridge.run.loss,
                               bridge.run.seed, bridge.run.device)
        self.ctx = self.trainer.ctx
        self._strategy_opt = None
        self.trained = 0                # experiences whose training has ended
        self.in_experience = False
        self.epochs_done = 0            # of the experience in training
        self.iterations = 0             # in all

    def evaluation_point(self) -> int | None:
        """The row of the metric matrices the heads are at — the number of steps trained, between
        experiences or after an experience's last epoch — or None in the middle of an experience (an
        evaluation there, e.g. Avalanche's periodic one, is reported but is no row of the matrices)."""
        if not self.in_experience:
            return self.trained
        return self.trained + 1 if self.epochs_done >= self.bridge.run.train.epochs else None

    def single_task(self, strategy) -> int:
        crit = self.bridge.criterion
        if crit.task is None:
            labels = sorted({g[0] for g in self.bridge.model.groups or []})
            if self.own_batches and not isinstance(strategy.dataloader, _Batches):
                raise BenchError(f"method {self.bridge.method.name!r} sees one pair per batch, but another plugin "
                                 f"replaced MethodPlugin's batches with a {type(strategy.dataloader).__name__} that "
                                 f"mixes task labels {labels} (replay such as Avalanche's ReplayPlugin or the Replay "
                                 "strategy): use a method that replays itself (er, der, ...) instead")
            raise BenchError(f"method {self.bridge.method.name!r} sees one pair per batch, got a batch of task labels "
                             f"{labels}: use own_batches=True, or no other plugin that mixes pairs")
        return crit.task

    def before_training(self, strategy, **kw):
        cfg = self.bridge.run.train
        if strategy.train_mb_size != cfg.batch_size or strategy.train_epochs != cfg.epochs:
            raise BenchError(f"the strategy trains with train_mb_size={strategy.train_mb_size}, "
                             f"train_epochs={strategy.train_epochs}; the run's are {cfg.batch_size} and {cfg.epochs}")

    @staticmethod
    def _task_aware(exp) -> None:
        """Avalanche sends the task labels to the model only for experiences that say they have them; those
        of its utilities (a validation stream, a rebuilt benchmark) do not: add the attributes."""
        if getattr(exp, "task_labels", None) is None:
            labels = sorted(int(t) for t in exp.dataset.targets_task_labels.uniques)
            exp.task_labels = labels
            if len(labels) == 1:
                exp.task_label = labels[0]

    def before_eval_exp(self, strategy, **kw):
        self._task_aware(strategy.experience)

    def before_training_exp(self, strategy, **kw):
        exp, tasks = strategy.experience, self.bridge.scenario.tasks
        self._task_aware(exp)
        label = experience_step(exp, "the trained experience", len(self.bridge.model.pairs))
        k = self.trained
        if k >= len(tasks):
            raise BenchError(f"all {len(tasks)} steps of the bridge's benchmark are trained: a new Bridge starts again")
        if label != tasks[k].index:
            raise BenchError(f"experience {k + 1} trained holds step {label + 1} ({self.bridge.task_name(label)}), "
                             f"but the bridge's benchmark has step {tasks[k].index + 1} ({tasks[k].name}) there: train "
                             "b.benchmark.train_stream's experiences in order, each once")
        xa, xb = pair_tensors(exp.dataset, tasks[k], experience_split(exp.dataset, "train"))
        device = self.trainer.device
        plan = self.trainer.begin_experience(k, (xa.to(device), xb.to(device)))
        self.in_experience, self.epochs_done = True, 0
        self._strategy_opt = strategy.optimizer
        opt = self.ctx.optimizer
        if opt is not None:
            strategy.optimizer = _ClosureStep(self, strategy, opt) if self.bridge.method.uses_closure else opt
        if not plan.tasks:
            strategy.dataloader = []
        elif self.own_batches:
            strategy.dataloader = _Batches(plan, self.bridge.run.train.batch_size)

    # the trainer's per-batch phases (bench.trainer.Trainer.train_batch) at Avalanche's hook points; the
    # strategy does the forward pass, the backward pass and the optimiser's step between them
    def before_backward(self, strategy, **kw):
        if self.bridge.method.uses_closure:
            return          # the closure computes the loss with the method's terms
        strategy.loss = strategy.loss.reshape(())      # Avalanche accumulates into a 1-element tensor
        crit = self.bridge.criterion
        # a method without before_backward may see batches mixing pairs (replay by another plugin)
        task = self.single_task(strategy) if self.trainer.overrides("before_backward") else crit.task
        strategy.loss = self.trainer.before_backward(task, strategy.mb_x, strategy.mb_y, crit.za, crit.zb,
                                                     strategy.loss)

    def after_backward(self, strategy, **kw):
        if not self.bridge.method.uses_closure:        # the closure clips and calls the hook itself
            self.trainer.after_backward()

    def before_update(self, strategy, **kw):
        self.trainer.before_update()

    def after_update(self, strategy, **kw):
        self.trainer.after_update()
        self.iterations += 1

    def after_training_epoch(self, strategy, **kw):
        self.epochs_done += 1

    def after_training_exp(self, strategy, **kw):
        self.trainer.end_experience()
        self.trained, self.in_experience = self.trained + 1, False
        strategy.optimizer, self._strategy_opt = self._strategy_opt, None


class SkipEvalMinibatches(SupervisedPlugin):
    """Evaluation without Avalanche's pass over the test minibatches: ``PairMetric`` computes from the
    experience's pairs directly, so the pass (items collated one by one, the model and the criterion run on
    each minibatch) only feeds Avalanche's own eval-phase metrics such as ``loss_metrics``, which then
    report nothing."""

    def before_eval_exp(self, strategy, **kw):
        strategy.dataloader = []


class _Rows:
    """The runner's evaluation for one bridge, per evaluated stream (by name): one row of every metric per
    evaluation point, computed once and shared by the metrics. The ``test`` (and ``probe``) stream is
    evaluated on the pairs the bridge's benchmark holds, as the runner does; a stream of any other name
    (a validation stream, a subset) on the pairs its own experiences hold. Rows of the matrices are keyed by
    the number of steps trained (``MethodPlugin.evaluation_point``); an evaluation in the middle of an
    experience is reported but kept out of them."""

    def __init__(self, bridge: Bridge):
        from .runner import make_evaluator
        self.bridge = bridge
        view = bridge.scenario
        self.columns = {t.index: k for k, t in enumerate(view.tasks + view.probes)}
        own = make_evaluator(bridge.run, view)
        self.evaluators: dict[str, Evaluator] = {"test": own, "probe": own}
        self.rows: dict[str, dict[int, dict]] = {}
        self._at: dict[str, tuple] = {}
        self._last: dict[str, dict] = {}
        self._checked: set = set()

    def row(self, strategy, stream: str) -> dict:
        point = self.bridge.plugin.evaluation_point()
        at = (point, self.bridge.plugin.iterations, self.bridge.plugin.trained)
        ev = self.evaluators[stream]
        if self._at.get(stream) != at:
            # mid-experience: no new reference for the alignment deviation (learned = 0)
            self._last[stream] = ev.evaluate(self.bridge.heads, learned=0 if point is None else point)
            self._at[stream] = at
            if point is not None:
                key = "test" if stream == "probe" else stream
                self.rows.setdefault(key, {})[point] = self._last[stream]
        return self._last[stream]

    def column(self, exp) -> tuple[str, int]:
        """The experience's stream (the evaluator's key) and column; the pairs it holds must be those that
        stream's evaluator uses."""
        stream = exp.origin_stream.name
        label = experience_step(exp, f"evaluated experience of the {stream} stream", len(self.bridge.model.pairs))
        if label not in self.columns:
            raise BenchError(f"evaluated experience holds step {label + 1} ({self.bridge.task_name(label)}), which "
                             "the bridge's benchmark does not train")
        if stream not in self.evaluators:
            self.evaluators[stream] = self._evaluator(exp.origin_stream, stream)
        col, key = self.columns[label], (stream, label, id(exp.dataset))
        if key not in self._checked:
            ev = self.evaluators[stream]
            task = ev.tasks[col]
            held = experience_rows(exp.dataset, len(task.test_source))
            want, split = ev.rows[col], experience_split(exp.dataset, "test")
            uses = "train" if task.test_source is self.bridge.base_task(label).train_source else "test"
            if split != uses or (held is None) != (want is None) or (
                    held is not None and want is not None and not torch.equal(held, want)):
                raise BenchError(f"evaluated experience {task.name!r} of the {stream} stream holds other pairs than the "
                                 f"{stream} stream evaluated before (the test stream: the bridge's benchmark's): "
                                 "evaluate a stream of other pairs under another name, e.g. "
                                 "benchmark_from_datasets(valid=[...])")
            self._checked.add(key)
        return stream, col

    def _evaluator(self, stream_exps, stream: str):
        """An evaluator over a stream's own pairs: one experience per step the bridge trains."""
        from dataclasses import replace

        from .evaluate import Evaluator
        view, held = self.bridge.scenario, {}
        for k, exp in enumerate(stream_exps):
            held[experience_step(exp, f"{stream}_stream[{k}]", len(self.bridge.model.pairs))] = exp
        missing = [t for t in view.tasks if t.index not in held]
        if missing:
            raise BenchError(f"the {stream} stream has no experience of step {missing[0].index + 1} ({missing[0].name}): "
                             "the suite's metrics need one experience of every step trained")
        tasks = []
        for t in view.tasks:
            split = experience_split(held[t.index].dataset, "test")
            base = self.bridge.base_task(t.index)
            tasks.append(replace(t, test_source=base.train_source if split == "train" else base.test_source))
        rows = [experience_rows(held[t.index].dataset, len(t.test_source)) for t in tasks]
        ev = self.bridge.run.eval
        return Evaluator(tasks, self.bridge.run.seed, ev.n_pairs, ev.repeats, ev.align_pairs, rows=rows)

    def matrices(self, stream: str) -> dict[str, list[list]]:
        rows = self.rows.get(stream, {})
        T, trained = len(self.bridge.scenario.tasks), self.bridge.plugin.trained
        missing = [k for k in range(max([trained, *rows]) + 1) if k not in rows]
        if missing:
            raise BenchError(f"the {stream} stream was not evaluated at row{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(map(str, missing))} (row k: after k experiences): evaluate it before "
                             "training and after every experience (strategy.eval, or eval_every with eval_streams)")
        return {k: [rows[r][k][:T] for r in sorted(rows)] for k in rows[0]}


class PairMetric(PluginMetric[float]):
    """One metric of the run record (``key``: r1, r5, r10, acc, align_dev, r1_ab, r10_ba, …) for each evaluated
    experience, as an Avalanche plugin metric named ``<label>/eval_phase/<stream>_stream/Exp<k>``. Metrics
    a task does not have (Acc without classes, a probe's alignment, a deviation before its reference) emit
    nothing."""

    def __init__(self, rows: _Rows, key: str, label: str):
        super().__init__()
        self._rows, self.key, self.label = rows, key, label
        self._value = None

    def __str__(self):
        return self.label

    def reset(self):
        self._value = None

    def result(self):
        return self._value

    def after_eval_exp(self, strategy):
        stream, col = self._rows.column(strategy.experience)
        value = self._rows.row(strategy, stream)[self.key][col]
        self._value = value
        if value is None:
            return None
        return [MetricValue(self, get_metric_name(self, strategy, add_experience=True, add_task=False), value,
                            strategy.clock.train_iterations)]


class PairStreamMetric(PluginMetric[float]):
    """One summary metric of the table (``bench.metrics.SUMMARY``) for an evaluated stream, named
    ``<title>/eval_phase/<stream>_stream``: a final average (R@10, Acc, …) is the mean over the stream's
    tasks of the current row; the others (BWT, forgetting, FWT, plasticity, AlignDev) are computed on the
    rows and columns of the steps trained so far. After the last step both are the table's values."""

    def __init__(self, rows: _Rows, key: str):
        super().__init__()
        self._rows, self.metric = rows, next(m for m in SUMMARY if m.key == key)
        self._value = None

    def __str__(self):
        return self.metric.title

    def reset(self):
        self._value = None

    def result(self):
        return self._value

    def after_eval(self, strategy):
        exp = strategy.experience
        stream = exp.origin_stream.name
        if stream == "probe":
            return None
        key, m = self.metric.matrix, self.metric
        if m.fn is final_average:
            value = final_average([self._rows.row(strategy, stream)[key][:len(self._rows.bridge.scenario.tasks)]])
        else:
            rows, t = self._rows.rows.get(stream, {}), self._rows.bridge.plugin.evaluation_point()
            if t is None or any(r not in rows for r in range(t + 1)) or t < 1:
                return None
            value = m.fn([rows[r][key][:t] for r in range(t + 1)])
        self._value = value
        if value is None:
            return None
        return [MetricValue(self, get_metric_name(self, strategy, add_experience=False, add_task=False), value,
                            strategy.clock.train_iterations)]


METRIC_LABELS = {"r1": "R@1", "r5": "R@5", "r10": "R@10", "acc": "ZeroShotAcc", "align_dev": "AlignDev",
                 "r1_ab": "R@1_ab", "r1_ba": "R@1_ba", "r10_ab": "R@10_ab", "r10_ba": "R@10_ba"}


class _Group(ExemplarsBuffer):
    """One pair's stored rows, in a random order fixed when they were stored: shrinking keeps a prefix, i.e.
    a uniform sample of the step."""

    def __init__(self, data):
        super().__init__(len(data))
        self.buffer = data

    def post_adapt(self, agent_state, exp):     # groups are filled by PairBuffer
        pass

    def resize(self, strategy, new_size: int):
        self.max_size = new_size
        if len(self.buffer) > new_size:
            self.buffer = self.buffer.subset(range(new_size))


class PairBuffer(BalancedExemplarsBuffer):
    """Replay storage for Avalanche's ``ReplayPlugin(mem_size, storage_policy=PairBuffer(mem_size))`` that
    never mixes modality pairs: one group per task label — per step, hence per pair, whatever experiences
    the stream is cut into — with ``max_size`` shared equally among the groups seen so far; each group is a
    uniform sample of its step drawn from ``seed`` (``bench.seeds``, purpose ``buffer``), not from the global
    RNG. The stored items keep their task label, so ``PairModel`` and ``PairInfoNCE`` send them through their
    own heads and contrast them only with their own pair."""

    def __init__(self, max_size: int, seed: int = 0):
        super().__init__(max_size, adaptive_size=True)
        self.seed = seed

    def post_adapt(self, agent_state, exp):
        data = exp.dataset
        for label in sorted(int(t) for t in data.targets_task_labels.uniques):
            part = data.task_set[label]
            if label in self.buffer_groups:           # a step seen again: draw from old and new together
                part = self.buffer_groups[label].buffer.concat(part)
            gen = seeds.generator(self.seed, "buffer", label, salt=3)
            self.buffer_groups[label] = _Group(part.subset(torch.randperm(len(part), generator=gen).tolist()))
        for size, group in zip(self.get_group_lengths(len(self.buffer_groups)), self.buffer_groups.values()):
            group.resize(agent_state, size)


class Bridge:
    """One method on one stream and seed, planned as ``python -m bench.run`` would plan it (``bench.api``'s
    arguments: the stream's ``[train]``, per-encoder and tuned settings, the method's ``options``), as the
    pieces of an Avalanche experiment: ``benchmark``, ``model`` (a ``PairModel`` over freshly initialised
    heads), ``criterion`` (``PairInfoNCE``), ``plugin`` (``MethodPlugin``), ``metrics()``, and
    ``strategy()`` — a ``Naive`` strategy with all of them. ``matrices()`` gives what was evaluated in the
    run file's form."""

    def __init__(self, method: str, stream: str = "sim-paper", seed: int = 0, *, options: dict | None = None,
                 own_batches: bool = True, **flags):
        from .api import plan_run
        from .runner import get_scenario, make_heads
        self.run = plan_run(method, stream, seed, options=options, **flags)
        torch.manual_seed(self.run.seed)
        self.base = get_scenario(self.run.stream, self.run.encoder, self.run.banks, self.run.split)
        self.benchmark = self.base.benchmark
        self.scenario = sc = as_run(self.base)      # the steps, order and pairs the benchmark holds
        self.method = registry.get(self.run.method)(**self.run.options)
        self.heads = make_heads(self.run, sc)
        self.model = PairModel(self.heads, [t.pair for t in self.base.tasks + self.base.probes])
        self.criterion = PairInfoNCE(self.model, self.run.loss)
        self.plugin = MethodPlugin(self, own_batches)
        self._rows = _Rows(self)

    def base_task(self, label: int):
        """The stream file's step (or probe) of task label ``label``."""
        return (self.base.tasks + self.base.probes)[label]

    def task_name(self, label: int) -> str:
        return self.base_task(label).name

    def metrics(self, keys=("r1", "r5", "r10", "acc", "align_dev"),
                stream_keys=("acc", "bwt_acc", "r10", "bwt_r10", "forgetting_r10")) -> list:
        """Plugin metrics for Avalanche's ``EvaluationPlugin``: per experience, one per key of the run record's
        matrices (``PairMetric``); per stream, one per summary metric of the table (``PairStreamMetric``)."""
        bad = [k for k in keys if k not in METRIC_LABELS]
        summary = {m.key for m in SUMMARY if m.matrix is not None and not m.probe}
        bad += [k for k in stream_keys if k not in summary]
        if bad:
            raise BenchError(f"unknown metric {bad[0]!r}; known: {', '.join(METRIC_LABELS)} per experience, "
                             f"{', '.join(sorted(summary))} per stream")
        return [PairMetric(self._rows, k, METRIC_LABELS[k]) for k in keys] + \
            [PairStreamMetric(self._rows, k) for k in stream_keys]

    def strategy(self, *, plugins=(), loggers=(), metrics=("r1", "r5", "r10", "acc", "align_dev"),
                 stream_metrics=("acc", "bwt_acc", "r10", "bwt_r10", "forgetting_r10"),
                 eval_minibatches: bool = True, **kwargs):
        """``avalanche.training.Naive`` over the model and criterion, with the method's plugin (first), the
        given ``plugins``, and an ``EvaluationPlugin`` of ``metrics`` (per experience) and ``stream_metrics``
        (per stream: the table's summary metrics) reporting to ``loggers`` (none: no output). The strategy's own
        optimiser is a placeholder (the plugin installs the run's per experience).
        ``eval_minibatches=False`` skips Avalanche's pass over the test minibatches (``SkipEvalMinibatches``):
        the same metrics, faster, but Avalanche's own eval-phase metrics (its ``loss_metrics``) see nothing."""
        import warnings

        from avalanche.training import Naive
        from avalanche.training.plugins import EvaluationPlugin
        cfg = self.run.train
        with warnings.catch_warnings():             # no loggers is a choice here, not an oversight
            warnings.filterwarnings("ignore", "No loggers specified")
            evaluator = EvaluationPlugin(*self.metrics(metrics, stream_metrics), loggers=list(loggers))
        return Naive(model=self.model, optimizer=torch.optim.SGD(self.model.parameters(), lr=0.0),
                     criterion=self.criterion, train_mb_size=cfg.batch_size, train_epochs=cfg.epochs,
                     eval_mb_size=max(cfg.batch_size, 256), device=self.run.device,
                     plugins=[self.plugin, *plugins, *([] if eval_minibatches else [SkipEvalMinibatches()])],
                     evaluator=evaluator, **kwargs)

    def matrices(self, stream: str = "test") -> dict[str, list[list]]:
        """The evaluated rows of a stream as the run file's ``matrices`` (the steps' columns in training order;
        row k after k experiences). Refused when a row is missing (a stream not evaluated before training or
        after some experience): BWT and forgetting need every row."""
        return self._rows.matrices(stream)
