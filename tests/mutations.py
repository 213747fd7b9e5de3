"""Mutation check: does the test suite notice when a mechanism breaks?

Each entry below breaks one mechanism in a copy of the project (an exact snippet replaced by a wrong one: a
sign, a missing term, a wrong index, a wrong rule) and runs the tests that should notice. A mutation is
*caught* when those tests fail. Every snippet must occur exactly once in its file, so a list that no longer
matches the code is an error, not a silent pass.

    python tests/mutations.py [--jobs N] [--only NAME,NAME] [--list] [--baseline-marker fast]

Exit code 0 when every mutation was caught (after a baseline run of the same tests on the unmutated copy
passed — with ``--baseline-marker``, only those carrying the marker: CI, where the whole suite has just
passed on the same tree); 1 otherwise, listing the survivors. Not collected by pytest (the name does not start with test_).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("bench", "methods", "datasets", "tests", "docs", "examples", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


M = Mutation
MUTATIONS = [
    # -- statistics across seeds, orders and worlds ---------------------------------------------------
    M("bootstrap not stratified", "bench/reporting/intervals.py",
      "        groups.setdefault(s, []).append(float(v))", "        groups.setdefault(0, []).append(float(v))",
      ("tests/test_intervals.py::test_the_bootstrap_resamples_within_strata",)),
    M("bootstrap interval quantiles swapped", "bench/reporting/intervals.py",
      "[(1 - level) / 2, (1 + level) / 2]", "[(1 + level) / 2, (1 - level) / 2]",
      ("tests/test_intervals.py::test_the_bootstrap_resamples_within_strata",)),
    M("differences paired by position instead of by run", "bench/reporting/intervals.py",
      "    return {k: a[k] - b[k] for k in a if k in b and a[k] is not None and b[k] is not None}",
      "    return {k: a[k] - b[j] for k, j in zip(a, b) if a[k] is not None and b[j] is not None}",
      ("tests/test_intervals.py::test_differences_are_paired_by_key_not_by_position",)),
    # -- claims and resumption ----------------------------------------------------------------------
    M("a swap a killed rebuild left is not finished", "bench/reporting/rebuild.py",
      "        if stage is not None and stage.is_dir():\n            _swap(target, stage)\n",
      "        if stage is not None and stage.is_dir():\n            pass\n",
      ("tests/test_interrupt.py::test_kill_9_during_the_rebuild_leaves_old_or_new_and_a_rerun_finishes_it",)),
    M("a stray copy of a run file counts as another seed", "bench/reporting/records.py",
      "        if p.relative_to(stream_dir) != own:", "        if False:",
      ("tests/test_records.py::test_a_stray_copy_of_a_run_file_is_refused_not_counted_as_another_seed",)),
    M("a summary edited away from its matrices is averaged", "bench/reporting/records.py",
      "        if not same:\n", "        if False:\n",
      ("tests/test_records.py::test_a_summary_or_cell_that_disagrees_with_the_matrices_is_refused",)),
    M("a dead local runner's claim waits for staleness", "bench/claims.py",
      "    except ProcessLookupError:\n        return True\n", "    except ProcessLookupError:\n        return False\n",
      ("tests/test_claims.py::test_a_claim_whose_local_owner_is_dead_is_taken_over_at_once",)),
    M("a sweep that leaves runs to another runner exits 0", "bench/run.py",
      "return 1 if failures else 3 if outcome.elsewhere else 0", "return 1 if failures else 0",
      ("tests/test_claims.py::test_a_live_claim_is_skipped_and_a_stale_one_taken_over",)),
    # -- evaluation and metrics ---------------------------------------------------------------------
    M("a method left at its defaults beside tuned ones is not marked", "bench/run.py",
      "    untuned_rows = [m for m in names if tuned_file and m not in tuned",
      "    untuned_rows = [m for m in [] if tuned_file and m not in tuned",
      ("tests/test_variants_tuning.py::test_a_method_left_at_its_defaults_beside_tuned_ones_is_said_and_marked",)),
    M("tuning a built-in stream writes into the package", "bench/tuned.py",
      'return settings_dir() / "tuned" / _name(spec, encoder) if is_builtin(spec) else',
      'return settings_dir() / "tuned" / _name(spec, encoder) if False else',
      ("tests/test_variants_tuning.py::test_tuning_a_built_in_stream_writes_to_the_user_settings_folder_never_the_package",)),
    M("tuning one method drops the others' tuned settings", "bench/tune.py",
      '"methods": {**kept, **result}}', '"methods": result}',
      ("tests/test_variants_tuning.py::test_tuning_a_built_in_stream_writes_to_the_user_settings_folder_never_the_package",)),
    M("summary bars are the std not the 95 % interval", "bench/reporting/figures.py",
      "half = {m: ci[m][1] or 0.0 for m in names}", "half = {m: self.agg[m][key][1] or 0.0 for m in names}",
      ("tests/test_figures.py::test_summary_draws_95_percent_t_intervals_on_an_axis_of_at_least_five_points",)),
    M("t quantile of the even-degrees series off by one term", "bench/reporting/intervals.py",
      "    for k in range(1, df // 2):", "    for k in range(1, df // 2 + 1):", ("tests/test_intervals.py",)),
    M("the last heatmap page as tall as a full one", "bench/reporting/figures.py",
      "nrow = math.ceil(len(methods) / ncol)", "nrow = math.ceil(min(len(self.methods), HEATMAP_PANELS) / ncol)",
      ("tests/test_figures.py::test_the_last_heatmap_page_is_as_tall_as_its_rows",)),
    M("a new method's style may be a built-in one's", "bench/reporting/style.py",
      "                if combos[(start + k) % len(combos)] not in taken)", "                if True)",
      ("tests/test_figures.py",)),
    M("a changed benchmark trains in the stream file's order", "bench/scenario.py",
      "    order = list(train)\n", "    order = sorted(train)\n", ("tests/test_changed_benchmarks.py",)),
    M("a changed benchmark is left out of the configuration", "bench/runner.py",
      "benchmark=scenario.changed)", "benchmark=None)", ("tests/test_changed_benchmarks.py",)),
    M("evaluation subsets drawn in training order", "bench/evaluate.py",
      "key=lambda j: (j >= self.n_steps, self.tasks[j].index, j)", "key=lambda j: j",
      ("tests/test_changed_benchmarks.py",)),
    M("bridge rows keyed by the experience counter", "bench/bridge.py",
      "return self.trained + 1 if self.epochs_done", "return self.trained if self.epochs_done",
      ("tests/test_changed_benchmarks.py",)),
    M("bridge stream BWT from the zero-shot row", "bench/bridge.py",
      "rows[r][key][:t] for r in range(t + 1)", "rows[r][key][:t] for r in [0] * (t + 1)",
      ("tests/test_changed_benchmarks.py",)),
    M("recall ties favour the query", "bench/evaluate.py",
      "scores.shape[dim] - 1 - unequal.long()", "0 * unequal.long()", ("tests/test_evaluate.py",)),
    M("recall counts from signs without the NaN rule", "bench/evaluate.py",
      ".nan_to_num_(-1.0).sign_()", ".sign_()", ("tests/test_evaluate.py",)),
    M("recall counts the candidates below as above", "bench/evaluate.py",
      "((net + unequal) / 2).long()", "((unequal - net) / 2).long()", ("tests/test_evaluate.py",)),
    M("recall in one direction only", "bench/evaluate.py",
      "_recall(*_counts(scores, 0), ks, scores.dtype)", "_recall(*_counts(scores, 1), ks, scores.dtype)",
      ("tests/test_evaluate.py",)),
    M("evaluation reuses tasks whose heads changed", "bench/evaluate.py",
      "                changed.add(m)\n", "                pass\n", ("tests/test_evaluate.py",)),
    M("evaluation's snapshot aliases the live weights", "bench/evaluate.py",
      "self._last[m] = [p.clone() for p in now]", "self._last[m] = now", ("tests/test_evaluate.py",)),
    M("evaluation reuse ignores a task's second head", "bench/evaluate.py",
      "        return self.tasks[j].pair\n", "        return self.tasks[j].pair[:1]\n", ("tests/test_evaluate.py",)),
    M("zero-shot Acc queries the text side", "bench/evaluate.py",
      "query = zb if task.text_side == 0 else za", "query = za if task.text_side == 0 else zb",
      ("tests/test_evaluate.py",)),
    M("alignment reference taken one step late", "bench/evaluate.py",
      "if j == learned - 1:", "if j == learned - 2:", ("tests/test_evaluate.py",)),
    M("BWT sign", "bench/metrics.py",
      "_diff(R[T][j], R[j + 1][j])", "_diff(R[j + 1][j], R[T][j])", ("tests/test_metrics.py",)),
    M("forgetting's max includes the final row", "bench/metrics.py",
      "for t in range(j + 1, T))", "for t in range(j + 1, T + 1))", ("tests/test_metrics.py",)),
    M("FWT from the row after learning", "bench/metrics.py",
      "_diff(R[j][j], R[0][j])", "_diff(R[j + 1][j], R[0][j])", ("tests/test_metrics.py",)),
    # -- loss and training loop ---------------------------------------------------------------------
    M("symmetric InfoNCE drops its b->a half", "bench/loss.py",
      'if cfg.direction == "both":', "if False:", ("tests/test_loss.py",)),
    M("InfoNCE positives on the wrong diagonal", "bench/loss.py",
      "labels = _arange(logits.shape[0], logits.device)", "labels = _arange(logits.shape[0], logits.device).flip(0)",
      ("tests/test_loss.py",)),
    M("gradient clipping skipped", "bench/trainer.py",
      "total = torch.nn.utils.clip_grad_norm_(params, clip, foreach=False)",
      "total = torch.nn.utils.clip_grad_norm_(params, float('inf'), foreach=False)",
      ("tests/test_training_options.py",)),
    M("linear schedule off by one", "bench/trainer.py",
      "max(0.0, (iterations - i) / iterations)", "max(0.0, (iterations - i - 1) / iterations)",
      ("tests/test_training_options.py",)),
    M("biases decayed despite decay_bias = false", "bench/trainer.py",
      '"weight_decay": 0.0}]', "}]", ("tests/test_training_options.py",)),
    M("one epoch per step whatever --epochs says", "bench/trainer.py",
      "            for _ in range(cfg.epochs):", "            for _ in range(1):", ("tests/test_training_options.py",)),
    M("tuning reads the test files", "bench/runner.py",
      '("train", "test") if split == "test" else ("train",)', '("train", "test")',
      ("tests/test_variants_tuning.py",)),
    M("tuning evaluates on the test pairs", "bench/scenario.py",
      "        sources = validation_split(spec, sources)", "        pass",
      ("tests/test_variants_tuning.py",)),
    M("variants share the plain method's label", "bench/settings.py",
      "    if not diff:\n        return None", "    if True:\n        return None",
      ("tests/test_variants_tuning.py",)),
    M("a failed run aborts a serial sweep", "bench/executor.py",
      "                sweep.failed(run, e)\n                continue",
      "                sweep.failed(run, e)\n                raise",
      ("tests/test_cli.py",)),
    M("the pool never measures a row", "bench/executor.py",
      '                seconds.setdefault(row_of(run), record["timings"]["wall_seconds"])\n', "",
      ("tests/test_executor.py",)),
    M("the pool takes the shortest row first", "bench/executor.py",
      "return max(measured, key=lambda i: (seconds[row_of(pending[i])], -i))",
      "return min(measured, key=lambda i: (seconds[row_of(pending[i])], i))", ("tests/test_executor.py",)),
    M("the pool skips measuring every row first", "bench/executor.py",
      "        if row_of(run) not in started:\n            return i", "        if False:\n            return i",
      ("tests/test_executor.py",)),
    M("negative method options accepted", "bench/method_spec.py",
      "low, high, low_open = cls.bounds.get(key, (0, None, False))",
      "low, high, low_open = cls.bounds.get(key, (None, None, False))", ("tests/test_cli.py",)),
    M("runners sharing a folder never claim their runs", "bench/run.py",
      "        why = self.claims.take(run)\n", "        why = None\n",
      ("tests/test_claims.py",)),
    M("the first settings layer wins", "bench/settings.py",
      "        values.update(given)\n", "        values.update({k: v for k, v in given.items() if k not in values})\n",
      ("tests/test_request.py",)),
    # -- regularisers -------------------------------------------------------------------------------
    M("EWC Fisher from |g| instead of g^2", "methods/ewc.py",
      "s.addcmul_(g, g)", "s.add_(g.abs())", ("tests/test_regularizers.py",)),
    M("EWC penalty without its 1/2", "methods/ewc.py",
      "factor_half = True", "factor_half = False", ("tests/test_regularizers.py",)),
    M("SI's Omega replaced instead of accumulated", "methods/si.py",
      "[o + c for o, c in zip(old, contrib)]", "contrib", ("tests/test_regularizers.py",)),
    M("SI's omega with the wrong sign", "methods/si.py",
      "omega.addcmul_(p.grad, delta, value=-1.0)", "omega.addcmul_(p.grad, delta, value=1.0)",
      ("tests/test_regularizers.py",)),
    M("MAS averages importances by default", "methods/mas.py",
      '"accumulate": "sum"}', '"accumulate": "average"}', ("tests/test_regularizers.py",)),
    M("MAS importance without the absolute value", "methods/mas.py",
      "s.add_(g.abs(), alpha=float(len(idx)))", "s.add_(g, alpha=float(len(idx)))", ("tests/test_regularizers.py",)),
    M("L2 anchor pulls towards minus the anchor", "methods/l2.py",
      "(p - p_old).pow(2).sum()", "(p + p_old).pow(2).sum()", ("tests/test_methods.py",)),
    # -- distillation -------------------------------------------------------------------------------
    M("LwF's KL direction reversed", "methods/lwf.py",
      "return kl_sum(new_logits, old_logits, dim) / new_logits.shape[1 - dim]",
      "return kl_sum(old_logits, new_logits, dim) / new_logits.shape[1 - dim]", ("tests/test_lwf.py",)),
    M("LwF distils a step whose heads are both new", "methods/lwf.py",
      "            return                                   # both heads new", "            pass  #",
      ("tests/test_lwf.py",)),
    M("LwF term 2 over every modality of the pair", "methods/lwf.py",
      "tuple(m for m in dict.fromkeys((a, b)) if m in self.trained)", "tuple(dict.fromkeys((a, b)))",
      ("tests/test_lwf.py",)),
    M("CILA's coefficient as a mean of per-step ratios", "methods/cila.py",
      "    return float(alpha) * num / den",
      "    pairs = zip(distillation, contrastive) if ratio == \"distill/contrastive\" else zip(contrastive, distillation)\n"
      "    return float(alpha) * sum(x / y for x, y in pairs) / len(contrastive)",
      ("tests/test_der_co2l.py",)),
    M("Co2L drops the buffered negatives", "methods/co2l.py",
      "F.cross_entropy(za @ torch.cat([zb, neg_b]).T / cfg.temperature, labels)",
      "F.cross_entropy(za @ zb.T / cfg.temperature, labels)", ("tests/test_der_co2l.py",)),
    M("DER distils towards zero instead of the stored embeddings", "methods/der.py",
      "err = (embed(heads, a, xa, self.in_play) - za_old).pow(2).sum()",
      "err = (embed(heads, a, xa, self.in_play) - 0 * za_old).pow(2).sum()", ("tests/test_der_co2l.py",)),
    M("DER++ ignores beta", "methods/derpp.py",
      "return (float(self.options.alpha), float(self.options.beta))", "return (float(self.options.alpha), 0.0)",
      ("tests/test_der_co2l.py",)),
    # -- replay -------------------------------------------------------------------------------------
    M("reservoir sampling with the wrong acceptance", "methods/_buffer.py",
      "dtype=torch.float64) * (i + 1)).long()", "dtype=torch.float64) * (i + 2)).long()", ("tests/test_replay.py",)),
    M("GEM builds every constraint from the first memory", "methods/gem.py",
      "                xa, xb = self.replay_buffer.task_rows(t)",
      "                xa, xb = self.replay_buffer.task_rows(self._ref_slots[0][0])", ("tests/test_replay.py",)),
    M("GEM (project=gradient) never writes the projected gradient back", "methods/gem.py",
      "self._flat_to_grads(gem_project(g, refs, self.options.margin, self.options.eps))",
      "gem_project(g, refs, self.options.margin, self.options.eps)", ("tests/test_replay.py",)),
    M("A-GEM (project=gradient) never writes the projected gradient back", "methods/agem.py",
      "                self._flat_to_grads(g)", "                pass", ("tests/test_replay.py",)),
    M("A-GEM projects compatible gradients", "methods/agem.py",
      "if host(dot) >= 0:", "if host(dot) < 0:", ("tests/test_replay.py",)),
    M("replay backpropagates into partner heads it does not train", "methods/er.py",
      "group_loss(ctx.heads, groups, ctx.loss_cfg, self.in_play)", "group_loss(ctx.heads, groups, ctx.loss_cfg)",
      ("tests/test_replay.py",)),
    M("joint trains on the current step only", "methods/joint.py",
      "return list(range(ctx.step + 1))", "return [ctx.step]", ("tests/test_methods.py",)),
    # -- null-space projections ---------------------------------------------------------------------
    M("DNS one-sided (output-side projector ignored)", "methods/dns.py",
      "return lambda delta: p_in.sandwich(p_out, delta)", "return lambda delta: p_in.right(delta)",
      ("tests/test_dns.py", "tests/test_nullspace.py")),
    M("dns-official sums its covariances in float64", "methods/dns_official.py",
      'numerics="float32", accumulate="float32")', 'numerics="float32")', ("tests/test_dns.py",)),
    M("DNS covariances never rescaled by the counts", "methods/dns.py",
      "covs[m] = cov if prev is None else prev * (old_n / new_n) + cov",
      "covs[m] = cov if prev is None else prev + cov", ("tests/test_dns.py", "tests/test_nullspace.py")),
    M("DNS output side from the modality's own embeddings", "methods/dns.py",
      "(self.cov_out, self.n_out, a, embed(b, xb)), (self.cov_out, self.n_out, b, embed(a, xa))",
      "(self.cov_out, self.n_out, a, embed(a, xa)), (self.cov_out, self.n_out, b, embed(b, xb))",
      ("tests/test_dns.py", "tests/test_nullspace.py")),
    M("update projection computed but not applied", "methods/_projection.py",
      "        lin.weight.data.sub_(r[:, :d])\n        if self.bias == \"fold\":\n            lin.bias.data.sub_(r[:, d])",
      "        pass", ("tests/test_dns.py", "tests/test_nullspace.py")),
    M("exact numerics keep round-off directions", "methods/_projection.py",
      "mask = evals > NUMERICAL_ZERO * top if floor else", "mask = evals > -1 if floor else",
      ("tests/test_dns.py",)),
    M("float32 numerics in float64", "methods/_projection.py",
      "u, s, _ = torch.linalg.svd(cov.float())", "u, s, _ = torch.linalg.svd(cov.double())",
      ("tests/test_dns.py",)),
    M("Adam-NSCL projects onto the principal subspace", "methods/nscl.py",
      "projector_from_mask(evecs, ~null_mask(host(evals), self.options.threshold, self.options.value))",
      "projector_from_mask(evecs, null_mask(host(evals), self.options.threshold, self.options.value))",
      ("tests/test_nullspace.py",)),
    M("GPM stops before the energy threshold", "methods/gpm.py",
      "hit = torch.nonzero(reached >= energy)", "hit = torch.nonzero(reached >= 0.5 * energy)",
      ("tests/test_nullspace.py",)),
    M("C-Flat never perturbs the weights", "methods/cflat.py",
      "return (self.rho / (norm.double() + self.eps)).to(norm.dtype)", "return 0.0", ("tests/test_cflat.py",)),
    M("the recorded loss leaves out the method's terms", "bench/trainer.py",
      "        return loss.detach(), infonce.detach()", "        return infonce.detach(), infonce.detach()",
      ("tests/test_loss_record.py",)),
    M("a loss that ends above its start is not flagged", "bench/trainer.py",
      "or end > RISE * abs(start) or", "or", ("tests/test_loss_record.py",)),
    M("planning imports torch and builds the stream when nothing will train", "bench/run.py",
      "    if todo:            # torch and the features only now", "    if True:            # torch and the features only now",
      ("tests/test_instant_cli.py",)),
    M("the declarations' cache drops the option bounds", "bench/catalogue.py",
      'attrs["bounds"] = {k: tuple(v) for k, v in d["bounds"].items()}', 'attrs["bounds"] = {}',
      ("tests/test_instant_cli.py",)),
    M("--force skips runs it finds finished", "bench/claims.py",
      "if path.exists() and (not self.force or path.stat().st_mtime >= self.started):", "if path.exists():",
      ("tests/test_cli.py",)),
    M("the batch-factor gradient ignores clipping's scale", "methods/_projection.py",
      "dz if scale is None else dz * scale", "dz", ("tests/test_nullspace.py",)),
    M("DNS's batch factors drop the output-side projector", "methods/dns.py",
      "return p_out.right(dz), p_in.right(x)", "return dz, p_in.right(x)", ("tests/test_nullspace.py",)),
    M("the Python API ignores its flags", "bench/api.py",
      "    return Request.from_flags(**flags, methods=(method,)", "    return Request.from_flags(methods=(method,)",
      ("tests/test_api.py",)),
    M("--save-heads numbers the steps from 0", "bench/runner.py",
      'save_heads(heads, Path(run.heads_dir) / f"step{step + 1}.pt")',
      'save_heads(heads, Path(run.heads_dir) / f"step{step}.pt")',
      ("tests/test_api.py",)),
    M("--log drops the training losses", "bench/tracking.py",
      '            self._log("train/loss", loss, self.x)\n', "", ("tests/test_tracking.py",)),
    M("a value read on the host every iteration", "bench/trainer.py",
      "        return loss.detach(), infonce.detach()", "        return loss.detach(), host(infonce).to(infonce.device)",
      ("tests/test_devices.py",)),
    M("the trainer ignores the experience's rows", "bench/scenario.py",
      "    return (xa, xb) if rows is None else (xa[rows], xb[rows])", "    return (xa, xb)",
      ("tests/test_avalanche.py",)),
    M("the task label is not the step", "bench/pair_data.py",
      'DataAttribute([step] * n, "targets_task_labels", use_in_getitem=True)',
      'DataAttribute([0] * n, "targets_task_labels", use_in_getitem=True)', ("tests/test_avalanche.py",)),
    # -- figures ------------------------------------------------------------------------------------
    M("a method's colour follows its position among the plotted ones", "bench/reporting/style.py",
      'out.setdefault(label(r), style(label(r), r.get("family"), r.get("role")))',
      'out.setdefault(label(r), style(str(len(out)), r.get("family"), r.get("role")))', ("tests/test_figures.py",)),
    M("labels placed over one another", "bench/reporting/layout.py",
      "cost = (sum(_overlap(box, b) for b in placed.values())", "cost = (0", ("tests/test_figures.py",)),
    M("line-end labels never pulled apart", "bench/reporting/layout.py",
      "while len(groups) > 1 and start(groups[-2]) + len(groups[-2]) * gap > start(groups[-1]):", "while False:",
      ("tests/test_figures.py",)),
    M("the zoom takes in every reference", "bench/reporting/layout.py",
      "if r is not None and math.isfinite(r) and lo - reach * span <= r <= hi + reach * span:",
      "if r is not None and math.isfinite(r):", ("tests/test_figures.py",)),
    M("a subset rebuild overwrites the full one", "bench/reporting/rebuild.py",
      "target = stream_dir if out is None else Path(out)", "target = stream_dir", ("tests/test_figures.py",)),
    # -- the Avalanche bridge ---------------------------------------------------------------------------
    M("bridge: a mixed batch goes through the first pair's heads", "bench/bridge.py",
      "lin = self.head(label, side)\n            out[idx]", "lin = self.head(groups[0][0], side)\n            out[idx]",
      ("tests/test_bridge.py",)),
    M("bridge: InfoNCE across the pairs of a mixed batch", "bench/bridge.py",
      "total = total + len(idx) * info_nce(za[idx], zb[idx], self.loss_cfg)",
      "total = total + len(idx) * info_nce(za, zb, self.loss_cfg)", ("tests/test_bridge.py",)),
    M("the run's schedule not stepped", "bench/trainer.py",
      "            self.plan.schedule.step()", "            pass", ("tests/test_bridge.py", "tests/test_training_options.py")),
    M("a method's before_update runs before its after_backward", "bench/trainer.py",
      "        self.after_backward()\n        self.before_update()\n        opt.step()",
      "        self.before_update()\n        self.after_backward()\n        opt.step()", ("tests/test_hook_order.py",)),
    M("bridge: the trainer's after_backward phase skipped", "bench/bridge.py",
      "            self.trainer.after_backward()", "            pass", ("tests/test_bridge.py", "tests/test_hook_order.py")),
    M("bridge: PairBuffer's groups not balanced", "bench/bridge.py",
      "            group.resize(agent_state, size)", "            pass", ("tests/test_bridge.py",)),
    M("bridge: metrics read the wrong column", "bench/bridge.py",
      "col, key = self.columns[label], (stream, label, id(exp.dataset))",
      "col, key = len(self.columns) - 1 - self.columns[label], (stream, label, id(exp.dataset))",
      ("tests/test_bridge.py",)),
    M("DNS ignores the accumulation precision", "methods/dns.py",
      'dtype = torch.float64 if self.options.accumulate == "float64" else torch.float32', "dtype = torch.float64",
      ("tests/test_dns.py",)),
    M("C-Flat's closure evaluations not clipped", "bench/trainer.py",
      "            self.after_backward()\n            return ctx.loss",
      "            self._call(\"after_backward\")\n            return ctx.loss",
      ("tests/test_cflat.py",)),
]


def copy_project(dest: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)


def apply(root: Path, m: Mutation) -> None:
    path = root / m.file
    text = path.read_text()
    count = text.count(m.old)
    if count != 1:
        raise SystemExit(f"error: mutation {m.name!r}: its snippet occurs {count} times in {m.file} "
                         f"(expected once; update tests/mutations.py)")
    path.write_text(text.replace(m.old, m.new))


TIMEOUT = 300          # seconds for one mutation's tests: a few times the slowest selection
TIMED_OUT = -1


def pytest(root: Path, tests: tuple[str, ...], *extra: str) -> tuple[int, str, float]:
    """Run ``tests`` in ``root``: (exit code, what to show, seconds). The summary names the first failing test
    (``-x`` stops there), so a list entry can be narrowed to the test that catches it. A run that outlives
    TIMEOUT is stopped and reported with the end of its output (pytest's faulthandler dumps the stacks of
    a test that hangs), never left to stall the whole check."""
    env = dict(os.environ, PYTHONPATH=str(root), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *extra, *tests]
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        tail = "\n        ".join(out.strip().splitlines()[-15:])
        return TIMED_OUT, f"timed out after {TIMEOUT} s; last output:\n        {tail}", time.perf_counter() - t0
    lines = r.stdout.strip().splitlines()
    failed = [ln.split()[1] for ln in lines if ln.startswith("FAILED ")][:1]
    last = (lines or [""])[-1] + (f"; first failure {failed[0].split('[')[0]}" if failed else "")
    return r.returncode, last, time.perf_counter() - t0


def run_one(m: Mutation, workdir: Path) -> tuple[Mutation, str, str, float]:
    root = workdir / m.name.replace(" ", "_").replace("/", "_")
    copy_project(root)
    apply(root, m)
    code, last, seconds = pytest(root, m.tests)
    shutil.rmtree(root, ignore_errors=True)
    # pytest: 1 = tests failed (caught); 0 = all passed (survived); a run that hangs is not a pass either,
    # but it is shown apart (a hang may be the code's, not the mutation's); anything else = the run broke
    verdict = {0: "SURVIVED", 1: "caught", TIMED_OUT: "hung"}.get(code, f"error (pytest exit {code})")
    return m, verdict, last, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--only", help="comma-separated mutation names (see --list)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--baseline-marker", metavar="EXPR",
                   help="run only the selected tests matching this marker on the unmutated copy (e.g. fast): "
                        "enough to show the copy works when the whole suite has just passed on the same tree "
                        "(CI); default: every selected test")
    args = p.parse_args(argv)
    chosen = MUTATIONS
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
        unknown = [n for n in names if n not in {m.name for m in MUTATIONS}]
        if unknown:
            raise SystemExit(f"error: unknown mutation {unknown[0]!r} (see --list)")
        chosen = [m for m in MUTATIONS if m.name in names]
    if args.list:
        for m in chosen:
            print(f"{m.name:70s} {m.file}")
        return 0
    with tempfile.TemporaryDirectory(prefix="cmcl-mutations-") as tmp:
        work = Path(tmp)
        base = work / "baseline"
        copy_project(base)
        for m in chosen:                       # every snippet present exactly once, before anything runs
            text = (base / m.file).read_text()
            if text.count(m.old) != 1:
                raise SystemExit(f"error: mutation {m.name!r}: its snippet occurs {text.count(m.old)} times in "
                                 f"{m.file} (expected once; update tests/mutations.py)")
        where = subprocess.run([sys.executable, "-c", "import bench, methods; print(bench.__file__, methods.__file__)"],
                               cwd=base, env=dict(os.environ, PYTHONPATH=str(base)), capture_output=True, text=True)
        if not all(f.startswith(str(base)) for f in where.stdout.split()):
            print(f"error: the copy imports bench/methods from elsewhere ({where.stdout.strip()})")
            return 1
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        marker = ("-m", args.baseline_marker) if args.baseline_marker else ()
        code, last, seconds = pytest(base, tests, *marker)
        print(f"baseline (unmutated, {len(tests)} test selections{', ' + marker[1] + ' only' if marker else ''}): "
              f"{last} [{seconds:.0f} s]", flush=True)
        if code != 0 and not (marker and code == 5):       # 5: no selected test carries the marker
            print("error: the unmutated copy fails these tests; fix the suite first")
            return 1
        results = []
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for m, verdict, last, seconds in pool.map(lambda m: run_one(m, work), chosen):
                results.append((m, verdict))
                print(f"{verdict:9s} {m.name}  ({m.file}; {last}) [{seconds:.0f} s]", flush=True)
    survivors = [m for m, v in results if v not in ("caught", "hung")]
    hung = [m for m, v in results if v == "hung"]
    print(f"\n{len(results) - len(survivors)} of {len(results)} mutations caught"
          + (f" ({len(hung)} by tests that hung: read their output above)" if hung else ""))
    for m in survivors:
        print(f"  not caught: {m.name} ({m.file})")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
