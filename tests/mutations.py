"""Mutation check: does the test suite notice when a mechanism breaks?

Each entry below breaks one mechanism in a copy of the project (an exact snippet replaced by a wrong one: a
sign, a missing term, a wrong index, a wrong rule) and runs the tests that should notice. A mutation is
*caught* when those tests fail. Every snippet must occur exactly once in its file, so a list that no longer
matches the code is an error, not a silent pass.

    python tests/mutations.py [--jobs N] [--only NAME,NAME] [--list] [--baseline-marker fast] [--fresh]

Each entry names the test that catches it (a test function, not a whole file), and each run is a child
forked from a warm interpreter that imported torch and avalanche once (``Zygote``; ``--fresh`` starts a new
interpreter per run instead): a mutation costs seconds, the whole list minutes. A selection still running
after TIMEOUT is stopped and shown as "hung" with its last output.

Exit code 0 when every mutation was caught (after a baseline run of the same tests on the unmutated copy
passed — with ``--baseline-marker``, only those carrying the marker: CI, where the whole suite has just
passed on the same tree); 1 otherwise, listing the survivors. Not collected by pytest (the name does not start with test_).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("bench", "methods", "benchmarks", "datasets", "tests", "docs", "examples", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    needs: str = ""          # an optional package its tests need (they skip without it): checked apart


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
    M("bold the best mean without the paired test", "bench/reporting/compare.py",
      "        return best if all(self.versus(best, other, m).separated > 0 for other in ranked[1:]) else None",
      "        return best",
      ("tests/test_compare.py::test_bold_needs_a_paired_interval_excluding_zero_against_every_other_method",)),
    M("paired differences not oriented by the metric's direction", "bench/reporting/compare.py",
      "    sign = 1.0 if higher else -1.0", "    sign = 1.0",
      ("tests/test_compare.py::test_differences_are_paired_by_run_key_and_oriented_by_the_metric",)),
    M("the t interval ignores the strata", "bench/reporting/intervals.py",
      "    if any(len(g) < 2 for g in groups.values()):", "    if True:",
      ("tests/test_compare.py::test_the_stratified_t_interval_by_hand",)),
    M("a rerun keeps a table built against another reference", "bench/reporting/rebuild.py",
      '    if (stream_dir / ".rebuild.json").read_text() != _settings(reference):\n        return False\n', "",
      ("tests/test_cli.py::test_compare_sets_the_reference_of_the_marks_and_a_rerun_follows_it",)),
    M("a task order other than the file's trains the file's order", "bench/scenario.py",
      "    perm = order_permutation(len(scenario.tasks), order)", "    perm = list(range(len(scenario.tasks)))",
      ("tests/test_orders_worlds.py::test_a_run_in_another_order_trains_the_same_tasks_in_another_sequence",)),
    M("every world simulates the file's seed", "bench/scenario.py",
      '    return replace(spec, simulation={**spec.simulation, "seed": seeds.derive(base, "world", world)})',
      "    return spec",
      ("tests/test_orders_worlds.py::test_another_world_is_another_simulated_stream_and_world_zero_is_the_files",)),
    M("figures step by step average runs of every task order", "bench/reporting/figures.py",
      "        self.in_order = {m: [r for r in rs if run_key(r)[1] == first] for m, rs in self.by_method.items()}",
      "        self.in_order = dict(self.by_method)",
      ("tests/test_orders_worlds.py::test_figures_step_by_step_read_the_files_own_order",)),
    M("MTIL Transfer counts the zero-shot row", "bench/metrics.py",
      "_mean(_val(R[t][j]) for t in range(1, j + 1))", "_mean(_val(R[t][j]) for t in range(0, j + 1))",
      ("tests/test_metrics.py::test_mtil_transfer_and_average_by_hand",)),
    M("the method's state counts the live heads", "bench/budget.py",
      "            if id(x) in live_ids or (x.device.type != \"meta\" and x.data_ptr() in live and x.numel()):\n"
      "                return\n", "",
      ("tests/test_budget.py::test_state_bytes_counts_each_held_tensor_once_and_not_the_heads",)),
    M("the state's peak is read only after the end-of-step hook", "bench/trainer.py",
      "        self.state_peak = max(self.state_peak, state_bytes(self.method, self.heads))\n"
      "        self._call(\"after_training_exp\")", "        self._call(\"after_training_exp\")",
      ("tests/test_budget.py::test_run_files_record_the_peak_state_and_the_table_shows_it",)),
    M("intransigence taken the wrong way round", "bench/reporting/report.py",
      "        d = cmp.versus(UPPER, row, plast)", "        d = cmp.versus(row, UPPER, plast)",
      ("tests/test_report.py::test_latex_table_and_report",)),
    # -- claims and resumption ----------------------------------------------------------------------
    M("pool workers keep the CLI's SIGTERM handler", "bench/files.py",
      "    signal.signal(signal.SIGTERM, signal.SIG_DFL)\n    try:", "    try:",
      ("tests/test_interrupt.py::test_pool_workers_die_at_sigterm_without_the_cli_handler",)),
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
    M("a progress line written apart from its newline", "bench/run.py",
      '    sys.stderr.write(text + "\\n")', "    print(text, file=sys.stderr)",
      ("tests/test_cli.py::test_each_progress_line_is_one_write_with_its_newline",)),
    M("tie tolerance ignored", "bench/tune.py",
      "        if gain > se:\n", "        if gain > 0:\n",
      ("tests/test_variants_tuning.py::test_a_candidate_replaces_the_default_only_beyond_one_standard_error",)),
    M("tuning seeds overlapping the reported ones", "bench/tune.py",
      "        seeds = [TUNING_SEED_BASE + s for s in seeds]\n", "        seeds = [s for s in seeds]\n",
      ("tests/test_variants_tuning.py::test_tuning_runs_on_seeds_and_worlds_of_its_own_at_least_three",)),
    M("tuning in the reported worlds", "bench/tune.py",
      "first_world=TUNING_WORLD_BASE,", "first_world=0,",
      ("tests/test_variants_tuning.py::test_tuning_runs_on_seeds_and_worlds_of_its_own_at_least_three",)),
    M("the standard error of the paired gain unscaled by n", "bench/tune.py",
      "    return mean, (var / len(d)) ** 0.5, len(d)", "    return mean, var ** 0.5, len(d)",
      ("tests/test_variants_tuning.py::test_paired_gain_is_the_mean_and_standard_error_of_per_run_differences",)),
    M("an optimum at its grid's edge is not extended", "bench/tune.py",
      "        if len(values) < 2 or v not in (values[0], values[-1]):",
      "        if len(values) < 2 or v not in (values[0],):",
      ("tests/test_variants_tuning.py::test_an_optimum_at_a_grids_edge_extends_it_one_step_within_the_options_range",)),
    M("reporting the runs tuning used is not warned", "bench/tuned.py",
      "    hit = {m: pairs for m, pairs in hit.items() if pairs}", "    hit = {}",
      ("tests/test_variants_tuning.py::test_reporting_the_runs_settings_were_tuned_on_is_warned",)),
    M("the within-step minimum taken over the new task", "bench/runner.py",
      "                old = list(range(step))\n", "                old = list(range(step + 1))\n",
      ("tests/test_stability_gap.py::test_eval_every_records_the_old_tasks_curves_without_changing_the_run[1]",)),
    M("the stability gap from the step's end not its lowest point", "bench/metrics.py",
      "            gaps.append(min(v for v in means if v is not None) - means[0])",
      "            gaps.append(means[-1] - means[0])",
      ("tests/test_stability_gap.py::test_the_gap_is_the_lowest_old_task_mean_inside_a_step_minus_before_it",)),
    M("within-step evaluations move the rows' record of changed heads", "bench/evaluate.py",
      "        changed = self._changed(heads, self._inner_last)", "        changed = self._changed(heads)",
      ("tests/test_stability_gap.py::test_eval_every_records_the_old_tasks_curves_without_changing_the_run[1]",)),
    M("summary bars are the std not the 95 % interval", "bench/reporting/figures.py",
      "half = {m: ci[m].half or 0.0 for m in names}", "half = {m: self.agg[m][key][1] or 0.0 for m in names}",
      ("tests/test_figures.py::test_summary_draws_95_percent_t_intervals_on_an_axis_of_at_least_five_points",)),
    M("t quantile of the even-degrees series off by one term", "bench/reporting/intervals.py",
      "    for k in range(1, df // 2):", "    for k in range(1, df // 2 + 1):",
      ("tests/test_intervals.py::test_t_quantiles_match_the_tables",)),
    M("the last heatmap page as tall as a full one", "bench/reporting/figures.py",
      "nrow = math.ceil(len(methods) / ncol)", "nrow = math.ceil(min(len(self.methods), HEATMAP_PANELS) / ncol)",
      ("tests/test_figures.py::test_the_last_heatmap_page_is_as_tall_as_its_rows",)),
    M("a new method's style may be a built-in one's", "bench/reporting/style.py",
      "                if combos[(start + k) % len(combos)] not in taken)", "                if True)",
      ("tests/test_figures.py::test_a_new_method_never_takes_a_built_in_methods_style",)),
    M("a changed benchmark trains in the stream file's order", "bench/scenario.py",
      "    order = list(train)\n", "    order = sorted(train)\n",
      ("tests/test_changed_benchmarks.py::test_a_reversed_benchmark_trains_in_its_own_order",)),
    M("a changed benchmark is left out of the configuration", "bench/runner.py",
      "benchmark=scenario.changed)", "benchmark=None)",
      ("tests/test_changed_benchmarks.py::test_a_reversed_benchmark_trains_in_its_own_order",)),
    M("evaluation subsets drawn in training order", "bench/evaluate.py",
      "key=lambda j: (j >= self.n_steps, self.tasks[j].index, j)", "key=lambda j: j",
      ("tests/test_changed_benchmarks.py::test_a_task_keeps_its_test_pairs_whatever_the_order",)),
    M("bridge rows keyed by the experience counter", "bench/bridge.py",
      "return self.trained + 1 if self.epochs_done", "return self.trained if self.epochs_done",
      ("tests/test_changed_benchmarks.py::test_bridge_rows_are_keyed_by_the_steps_trained",)),
    M("bridge stream BWT from the zero-shot row", "bench/bridge.py",
      "rows[r][key][:t] for r in range(t + 1)", "rows[r][key][:t] for r in [0] * (t + 1)",
      ("tests/test_changed_benchmarks.py::test_stream_metrics_are_the_tables",)),
    M("recall ties favour the query", "bench/evaluate.py",
      "scores.shape[dim] - 1 - unequal.long()", "0 * unequal.long()",
      ("tests/test_evaluate.py::test_a_tie_with_the_ground_truth_counts_as_its_expected_value",)),
    M("recall counts from signs without the NaN rule", "bench/evaluate.py",
      ".nan_to_num_(-1.0).sign_()", ".sign_()", ("tests/test_evaluate.py::test_counts_equal_the_comparisons_both_ways",)),
    M("recall counts the candidates below as above", "bench/evaluate.py",
      "((net + unequal) / 2).long()", "((unequal - net) / 2).long()",
      ("tests/test_evaluate.py::test_a_tie_with_the_ground_truth_counts_as_its_expected_value",)),
    M("recall in one direction only", "bench/evaluate.py",
      "_recall(*_counts(scores, 0), ks, scores.dtype)", "_recall(*_counts(scores, 1), ks, scores.dtype)",
      ("tests/test_evaluate.py::test_evaluator_reports_both_directions_and_their_mean",)),
    M("evaluation reuses tasks whose heads changed", "bench/evaluate.py",
      "                changed.add(m)\n", "                pass\n",
      ("tests/test_evaluate.py::test_alignment_deviation_is_relative_to_the_scores_right_after_the_task_was_learned",)),
    M("evaluation's snapshot aliases the live weights", "bench/evaluate.py",
      "store[m] = [p.clone() for p in now]", "store[m] = now",
      ("tests/test_evaluate.py::test_alignment_deviation_is_relative_to_the_scores_right_after_the_task_was_learned",)),
    M("evaluation reuse ignores a task's second head", "bench/evaluate.py",
      "        return self.tasks[j].pair\n", "        return self.tasks[j].pair[:1]\n",
      ("tests/test_evaluate.py::test_an_evaluation_reuses_exactly_the_tasks_whose_heads_did_not_change",)),
    M("zero-shot Acc queries the text side", "bench/evaluate.py",
      "query = zb if task.text_side == 0 else za", "query = za if task.text_side == 0 else zb",
      ("tests/test_evaluate.py::test_zero_shot_accuracy_queries_the_non_text_side",)),
    M("alignment reference taken one step late", "bench/evaluate.py",
      "if j == learned - 1:", "if j == learned - 2:",
      ("tests/test_evaluate.py::test_alignment_deviation_is_relative_to_the_scores_right_after_the_task_was_learned",)),
    M("BWT sign", "bench/metrics.py",
      "_diff(R[T][j], R[j + 1][j])", "_diff(R[j + 1][j], R[T][j])", ("tests/test_metrics.py::test_bwt",)),
    M("forgetting's max includes the final row", "bench/metrics.py",
      "for t in range(j + 1, T))", "for t in range(j + 1, T + 1))", ("tests/test_metrics.py::test_forgetting",)),
    M("FWT from the row after learning", "bench/metrics.py",
      "_diff(R[j][j], R[0][j])", "_diff(R[j + 1][j], R[0][j])", ("tests/test_metrics.py::test_fwt",)),
    # -- loss and training loop ---------------------------------------------------------------------
    M("symmetric InfoNCE drops its b->a half", "bench/loss.py",
      "loss = (rows.diagonal().mean() + cols.diagonal().mean()).mul(-0.5)", "loss = rows.diagonal().mean().neg()",
      ("tests/test_loss.py::test_direction_and_symmetry",)),
    M("InfoNCE positives on the wrong diagonal", "bench/loss.py",
      "loss = (rows.diagonal().mean() + cols.diagonal().mean()).mul(-0.5)",
      "loss = (rows.flip(0).diagonal().mean() + cols.flip(0).diagonal().mean()).mul(-0.5)",
      ("tests/test_loss.py::test_perfect_alignment_gives_low_loss_and_random_gives_log_n",)),
    M("InfoNCE gradient counts the positives once for two directions", "bench/loss.py",
      "G.add_(cols.exp()).diagonal().sub_(2.0)", "G.add_(cols.exp()).diagonal().sub_(1.0)",
      ("tests/test_loss.py::test_the_written_out_gradient_is_the_definitions",)),
    M("InfoNCE gradient skips the normalisation's projection", "bench/loss.py",
      "(dub - ub * (dub * ub).sum(1, keepdim=True)).div_(nb))", "dub.div_(nb))",
      ("tests/test_loss.py::test_the_written_out_gradient_is_the_definitions",)),
    M("gradient clipping skipped", "bench/trainer.py",
      "total = torch.nn.utils.clip_grad_norm_(params, clip, foreach=False)",
      "total = torch.nn.utils.clip_grad_norm_(params, float('inf'), foreach=False)",
      ("tests/test_training_options.py::test_clipping_bounds_the_gradient_norm_hooks_see",)),
    M("linear schedule off by one", "bench/trainer.py",
      "max(0.0, (iterations - i) / iterations)", "max(0.0, (iterations - i - 1) / iterations)",
      ("tests/test_training_options.py::test_linear_schedule_decays_to_zero_within_each_step",)),
    M("biases decayed despite decay_bias = false", "bench/trainer.py",
      '"weight_decay": 0.0}]', "}]", ("tests/test_training_options.py::test_bias_decay_switch",)),
    M("one epoch per step whatever --epochs says", "bench/trainer.py",
      "            for _ in range(cfg.epochs):", "            for _ in range(1):",
      ("tests/test_training_options.py::test_linear_schedule_decays_to_zero_within_each_step",)),
    M("tuning reads the test files", "bench/runner.py",
      '("train", "test") if split == "test" else ("train",)', '("train", "test")',
      ("tests/test_variants_tuning.py::test_tuning_never_reads_the_test_sets",)),
    M("tuning evaluates on the test pairs", "bench/scenario.py",
      "        sources = validation_split(spec, sources, world)", "        pass",
      ("tests/test_variants_tuning.py::test_validation_split_is_fixed_disjoint_and_shared_by_a_sources_steps",)),
    M("variants share the plain method's label", "bench/settings.py",
      "    if not diff:\n        return None", "    if True:\n        return None",
      ("tests/test_variants_tuning.py::test_a_grid_of_three_values_for_two_methods_in_one_command",)),
    M("a failed run aborts a serial sweep", "bench/executor.py",
      "                sweep.failed(run, e)\n                continue",
      "                sweep.failed(run, e)\n                raise",
      ("tests/test_cli.py::test_a_failed_run_is_reported_and_the_others_finish",)),
    M("the pool never measures a row", "bench/executor.py",
      '                seconds.setdefault(row_of(run), record["timings"]["wall_seconds"])\n', "",
      ("tests/test_executor.py::test_the_pool_follows_the_order_as_rows_are_measured",)),
    M("the pool takes the shortest row first", "bench/executor.py",
      "return max(measured, key=lambda i: (seconds[row_of(pending[i])], -i))",
      "return min(measured, key=lambda i: (seconds[row_of(pending[i])], i))",
      ("tests/test_executor.py::test_then_the_longest_measured_row_and_unmeasured_rows_last",)),
    # -- the Ray executor (needs the optional extra: `--needing ray` after installing it) ------------------
    M("Ray: a run lost to the system is not retried", "bench/ray_executor.py",
      '"max_retries": retries(execution),', '"max_retries": 0,',
      ("tests/test_ray.py::test_task_options_ask_ray_for_gpus_and_retry_only_system_failures",
       "tests/test_ray.py::test_a_killed_worker_is_retried_and_every_run_file_equals_the_local_executors"), "ray"),
    M("Ray: a run lost to the system stops the sweep", "bench/ray_executor.py",
      "                except ray.exceptions.RayError as e:              # the system: retries used up\n",
      "                except ray.exceptions.RayTaskError as e:\n",
      ("tests/test_ray.py::test_a_run_lost_more_often_than_max_retries_is_listed_and_the_others_kept",), "ray"),
    M("Ray: runs ask for no GPU", "bench/ray_executor.py",
      '    return 1.0 if execution.device.split(":")[0] == "cuda" else 0.0', "    return 0.0",
      ("tests/test_ray.py::test_task_options_ask_ray_for_gpus_and_retry_only_system_failures",), "ray"),
    M("Ray: --jobs does not bound the runs in flight", "bench/ray_executor.py",
      "        window = execution.jobs or len(runs)", "        window = len(runs)",
      ("tests/test_ray.py::test_jobs_bound_the_runs_in_flight_on_a_cluster",), "ray"),
    M("Ray: a node's other version of a bank passes the check", "bench/ray_executor.py",
      "        if here != sha:", "        if not here:",
      ("tests/test_ray.py::test_a_node_that_cannot_read_the_banks_is_named",), "ray"),
    M("Ray: the GPU check ignores the GPUs", "bench/ray_executor.py",
      "fit = [n for n in nodes if all(n[\"Resources\"].get(k, 0.0) >= v for k, v in need.items() if v)]",
      "fit = [n for n in nodes if n[\"Resources\"].get(\"CPU\", 0.0) >= 1]",
      ("tests/test_ray.py::test_a_cluster_without_the_gpus_a_run_asks_for_is_one_line",), "ray"),
    M("Ray Tune: ASHA may stop the default", "bench/ray_tune.py",
      '            return TrialScheduler.CONTINUE if trial.config.get("row") == default_row else decision',
      "            return decision",
      ("tests/test_ray.py::test_asha_ranks_the_default_but_never_stops_it",), "ray"),
    M("Ray Tune: a trial trains its finished runs again", "bench/ray_tune.py",
      "        rec = _finished(run, Path(out))", "        rec = None",
      ("tests/test_ray.py::test_asha_stops_a_candidate_that_falls_behind_and_never_the_default",), "ray"),
    M("Ray Tune: a candidate stopped early is not recorded", "bench/ray_tune.py",
      "                elif reached < steps * n_runs:", "                elif False:",
      ("tests/test_ray.py::test_asha_stops_a_candidate_that_falls_behind_and_never_the_default",), "ray"),
    M("the pool skips measuring every row first", "bench/executor.py",
      "        if row_of(run) not in started:\n            return i", "        if False:\n            return i",
      ("tests/test_executor.py::test_every_row_starts_once_in_the_planned_order_first",)),
    M("negative method options accepted", "bench/method_spec.py",
      "low, high, low_open = cls.bounds.get(key, (0, None, False))",
      "low, high, low_open = cls.bounds.get(key, (None, None, False))",
      ("tests/test_cli.py::test_bad_input_is_one_line_exit_2_and_writes_nothing",)),
    M("runners sharing a folder never claim their runs", "bench/run.py",
      "        why = self.claims.take(run)\n", "        why = None\n",
      ("tests/test_claims.py::test_two_overlapping_runners_share_the_work",)),
    M("the first settings layer wins", "bench/settings.py",
      "        values.update(given)\n", "        values.update({k: v for k, v in given.items() if k not in values})\n",
      ("tests/test_request.py::test_layered_later_layers_win_and_name_their_source",)),
    # -- regularisers -------------------------------------------------------------------------------
    M("EWC Fisher from |g| instead of g^2", "methods/ewc.py",
      "s.addcmul_(g, g)", "s.add_(g.abs())",
      ("tests/test_regularizers.py::test_ewc_fisher_is_the_squared_gradient_and_the_penalty_has_its_half",)),
    M("EWC penalty without its 1/2", "methods/ewc.py",
      "factor_half = True", "factor_half = False",
      ("tests/test_regularizers.py::test_ewc_fisher_is_the_squared_gradient_and_the_penalty_has_its_half",)),
    M("SI's Omega replaced instead of accumulated", "methods/si.py",
      "[o + c for o, c in zip(old, contrib)]", "contrib", ("tests/test_regularizers.py::test_si_accumulates_omega_over_steps",)),
    M("SI's omega with the wrong sign", "methods/si.py",
      "omega.addcmul_(p.grad, delta, value=-1.0)", "omega.addcmul_(p.grad, delta, value=1.0)",
      ("tests/test_regularizers.py::test_penalty_zero_at_anchor_positive_away_and_new_modality_free",)),
    M("MAS averages importances by default", "methods/mas.py",
      '"accumulate": "sum"}', '"accumulate": "average"}',
      ("tests/test_regularizers.py::test_mas_and_online_ewc_accumulate_as_specified",)),
    M("MAS importance without the absolute value", "methods/mas.py",
      "s.add_(g.abs(), alpha=float(len(idx)))", "s.add_(g, alpha=float(len(idx)))",
      ("tests/test_regularizers.py::test_importances_nonzero_for_the_trained_heads_only",)),
    M("L2 anchor pulls towards minus the anchor", "methods/l2.py",
      "(p - p_old).pow(2).sum()", "(p + p_old).pow(2).sum()",
      ("tests/test_methods.py::test_l2_penalty_is_zero_at_the_anchor_and_grows_away_from_it",)),
    # -- distillation -------------------------------------------------------------------------------
    M("LwF's KL direction reversed", "methods/lwf.py",
      "return kl_sum(new_logits, old_logits, dim) / new_logits.shape[1 - dim]",
      "return kl_sum(old_logits, new_logits, dim) / new_logits.shape[1 - dim]",
      ("tests/test_lwf.py::test_terms_are_zero_at_the_snapshot_and_positive_after_a_head_moves",)),
    M("LwF distils a step whose heads are both new", "methods/lwf.py",
      "            return                                   # both heads new", "            pass  #",
      ("tests/test_lwf.py::test_no_distillation_on_a_step_whose_heads_are_both_new",)),
    M("LwF term 2 over every modality of the pair", "methods/lwf.py",
      "tuple(m for m in dict.fromkeys((a, b)) if m in self.trained)", "tuple(dict.fromkeys((a, b)))",
      ("tests/test_lwf.py::test_term2_only_for_modalities_an_earlier_step_trained",)),
    M("CILA's coefficient as a mean of per-step ratios", "methods/cila.py",
      "    return float(alpha) * num / den",
      "    pairs = zip(distillation, contrastive) if ratio == \"distill/contrastive\" else zip(contrastive, distillation)\n"
      "    return float(alpha) * sum(x / y for x, y in pairs) / len(contrastive)",
      ("tests/test_der_co2l.py::test_cila_coefficient_follows_its_formula",)),
    M("Co2L drops the buffered negatives", "methods/co2l.py",
      "F.cross_entropy(za @ torch.cat([zb, neg_b]).T / cfg.temperature, labels)",
      "F.cross_entropy(za @ zb.T / cfg.temperature, labels)",
      ("tests/test_der_co2l.py::test_asymmetric_infonce_anchors_only_the_current_pairs",)),
    M("DER distils towards zero instead of the stored embeddings", "methods/der.py",
      "err = (embed(heads, a, xa, self.in_play) - za_old).pow(2).sum()",
      "err = (embed(heads, a, xa, self.in_play) - 0 * za_old).pow(2).sum()",
      ("tests/test_der_co2l.py::test_der_stores_the_step_end_embeddings_and_distils_them",)),
    M("DER++ ignores beta", "methods/derpp.py",
      "return (float(self.options.alpha), float(self.options.beta))", "return (float(self.options.alpha), 0.0)",
      ("tests/test_der_co2l.py::test_derpp_is_der_plus_beta_times_the_replayed_infonce",)),
    M("gpu_check counts no host read", "benchmarks/gpu_check.py",
      "        m.host = counting", "        pass",
      ("tests/test_benchmark_scripts.py::test_gpu_check_counts_host_reads_per_iteration",)),
    # -- replay -------------------------------------------------------------------------------------
    M("reservoir sampling with the wrong acceptance", "methods/_buffer.py",
      "dtype=torch.float64) * (i + 1)).long()", "dtype=torch.float64) * (i + 2)).long()",
      ("tests/test_replay.py::test_vectorised_reservoir_equals_sequential_algorithm_r",)),
    M("GEM builds every constraint from the first memory", "methods/gem.py",
      "                xa, xb = self.replay_buffer.task_rows(t)",
      "                xa, xb = self.replay_buffer.task_rows(self._ref_slots[0][0])",
      ("tests/test_replay.py::test_gem_has_one_constraint_per_memory_each_from_its_own_pairs",)),
    M("GEM's reference gradient of a head from the other head's embedding gradient", "methods/gem.py",
      "for m, x, d in zip((a, b), xs, dz):", "for m, x, d in zip((a, b), xs, dz[::-1]):",
      ("tests/test_replay.py::test_gem_has_one_constraint_per_memory_each_from_its_own_pairs",)),
    M("GEM (project=gradient) never writes the projected gradient back", "methods/gem.py",
      "self._flat_to_grads(gem_project(g, refs, self.options.margin, self.options.eps))",
      "gem_project(g, refs, self.options.margin, self.options.eps)",
      ("tests/test_replay.py::test_projected_gradient_reaches_the_optimiser",)),
    M("A-GEM (project=gradient) never writes the projected gradient back", "methods/agem.py",
      "                self._flat_to_grads(g)", "                pass",
      ("tests/test_replay.py::test_projected_gradient_reaches_the_optimiser",)),
    M("A-GEM's reference gradient ignores the groups' weights", "methods/_buffer.py",
      ".addmm_(dz.T, x, alpha=weight)", ".addmm_(dz.T, x)",
      ("tests/test_replay.py::test_agem_reference_gradient_is_the_replayed_losses_gradient",)),
    M("A-GEM projects compatible gradients", "methods/agem.py",
      "if host(dot) >= 0:", "if host(dot) < 0:", ("tests/test_replay.py::test_agem_projection_removes_only_the_conflict",)),
    M("replay backpropagates into partner heads it does not train", "methods/er.py",
      "group_loss(ctx.heads, groups, ctx.loss_cfg, self.in_play)", "group_loss(ctx.heads, groups, ctx.loss_cfg)",
      ("tests/test_replay.py::test_heads_pair_spends_no_gradient_on_a_partner_head_it_does_not_train",)),
    M("joint trains on the current step only", "methods/joint.py",
      "return list(range(ctx.step + 1))", "return [ctx.step]", ("tests/test_methods.py::test_joint_trains_on_every_seen_pair",)),
    # -- null-space projections ---------------------------------------------------------------------
    M("DNS one-sided (output-side projector ignored)", "methods/dns.py",
      "return lambda delta: p_in.sandwich(p_out, delta)", "return lambda delta: p_in.right(delta)",
      ("tests/test_nullspace.py::test_gradient_projection_on_batch_factors_equals_the_dense_one",)),
    M("dns-official sums its covariances in float64", "methods/dns_official.py",
      'numerics="float32", accumulate="float32")', 'numerics="float32")',
      ("tests/test_dns.py::test_official_variant_sums_covariances_in_float32",)),
    M("DNS covariances never rescaled by the counts", "methods/dns.py",
      "covs[m] = cov if prev is None else prev * (old_n / new_n) + cov",
      "covs[m] = cov if prev is None else prev + cov",
      ("tests/test_dns.py::test_running_covariances_are_sample_weighted_means",)),
    M("DNS output side from the modality's own embeddings", "methods/dns.py",
      "(self.cov_out, self.n_out, a, embedded_gram(ctx.heads[b], grams[b], xb, free, dtype)),",
      "(self.cov_out, self.n_out, a, embedded_gram(ctx.heads[a], grams[a], xa, free, dtype)),",
      ("tests/test_dns.py::test_dns_keeps_step1_alignment_scores_while_vanilla_moves_them",)),
    M("update projection computed but not applied", "methods/_projection.py",
      "        lin.weight.data.sub_(r[:, :d])\n        if self.bias == \"fold\":\n            lin.bias.data.sub_(r[:, d])",
      "        pass", ("tests/test_dns.py::test_projected_update_keeps_old_scores_exactly",)),
    M("exact numerics keep round-off directions", "methods/_projection.py",
      "mask = evals > NUMERICAL_ZERO * top if floor else", "mask = evals > -1 if floor else",
      ("tests/test_dns.py::test_float32_numerics_keep_round_off_directions_as_the_official_code",)),
    M("float32 numerics in float64", "methods/_projection.py",
      "evals, u = torch.linalg.eigh(cov.float())", "evals, u = torch.linalg.eigh(cov.double())",
      ("tests/test_dns.py::test_float32_numerics_keep_round_off_directions_as_the_official_code",)),
    M("Adam-NSCL projects onto the principal subspace", "methods/nscl.py",
      "projector_from_mask(evecs, ~null_mask(host(evals), self.options.threshold, self.options.value))",
      "projector_from_mask(evecs, null_mask(host(evals), self.options.threshold, self.options.value))",
      ("tests/test_nullspace.py::test_nscl_update_lies_in_the_null_space_of_past_inputs",)),
    M("GPM stops before the energy threshold", "methods/gpm.py",
      "hit = torch.nonzero(reached >= energy)", "hit = torch.nonzero(reached >= 0.5 * energy)",
      ("tests/test_nullspace.py::test_gpm_update_is_orthogonal_to_the_stored_input_basis",)),
    M("C-Flat never perturbs the weights", "methods/cflat.py",
      "return (self.rho / (norm.double() + self.eps)).to(norm.dtype)", "return 0.0",
      ("tests/test_cflat.py::test_step_differs_from_the_base_optimisers_step",)),
    M("the recorded loss leaves out the method's terms", "bench/trainer.py",
      "        return loss.detach(), infonce.detach()", "        return infonce.detach(), infonce.detach()",
      ("tests/test_loss_record.py::test_the_trainer_records_the_optimised_loss_and_the_infonce_per_epoch",)),
    M("a loss that ends above its start is not flagged", "bench/trainer.py",
      "or end > RISE * abs(start) or", "or", ("tests/test_loss_record.py::test_unstable_training_is_flagged",)),
    M("planning imports torch and builds the stream when nothing will train", "bench/run.py",
      "    if todo:            # torch and the features only now", "    if True:            # torch and the features only now",
      ("tests/test_instant_cli.py::test_a_rerun_with_nothing_to_do_imports_neither_and_keeps_the_outputs",)),
    M("the declarations' cache drops the option bounds", "bench/catalogue.py",
      'attrs["bounds"] = {k: tuple(v) for k, v in d["bounds"].items()}', 'attrs["bounds"] = {}',
      ("tests/test_instant_cli.py::test_the_catalogue_declares_what_the_classes_declare",)),
    M("--force skips runs it finds finished", "bench/claims.py",
      "if path.exists() and (not self.force or path.stat().st_mtime >= self.started):", "if path.exists():",
      ("tests/test_cli.py::test_rerun_skips_finished_runs_and_reruns_changed_configs",)),
    M("the batch-factor gradient ignores clipping's scale", "methods/_projection.py",
      "dz if scale is None else dz * scale", "dz",
      ("tests/test_nullspace.py::test_gradient_projection_on_batch_factors_equals_the_dense_one",)),
    M("DNS's embedding covariance drops the bias", "methods/dns.py",
      "w = torch.cat([lin.weight, lin.bias.unsqueeze(1)], dim=1).to(dtype)",
      "w = torch.cat([lin.weight, 0 * lin.bias.unsqueeze(1)], dim=1).to(dtype)",
      ("tests/test_dns.py::test_embedding_covariance_from_the_inputs_gram_is_the_embeddings_own",)),
    M("float32 numerics keep only positive eigenvalues", "methods/_projection.py",
      "keep = host(principal_mask(evals.abs(), kind, value, floor=False)).bool()",
      "keep = host(principal_mask(evals, kind, value, floor=False)).bool()",
      ("tests/test_dns.py::test_float32_numerics_keep_round_off_directions_as_the_official_code",)),
    M("DNS's batch factors drop the output-side projector", "methods/dns.py",
      "return p_out.right(dz), p_in.right(x)", "return dz, p_in.right(x)",
      ("tests/test_nullspace.py::test_gradient_projection_on_batch_factors_equals_the_dense_one",)),
    M("the Python API ignores its flags", "bench/api.py",
      "    return Request.from_flags(**flags, methods=(method,)", "    return Request.from_flags(methods=(method,)",
      ("tests/test_api.py::test_the_api_gives_the_cli_run_file_and_the_trained_heads",)),
    M("--save-heads numbers the steps from 0", "bench/runner.py",
      'save_heads(heads, Path(run.heads_dir) / f"step{step + 1}.pt")',
      'save_heads(heads, Path(run.heads_dir) / f"step{step}.pt")',
      ("tests/test_api.py::test_the_api_gives_the_cli_run_file_and_the_trained_heads",)),
    M("--log drops the training losses", "bench/tracking.py",
      '            self._log("train/loss", loss, self.x)\n', "",
      ("tests/test_tracking.py::test_csv_and_tensorboard_logs_hold_the_run_files_losses_and_evaluations",)),
    M("a value read on the host every iteration", "bench/trainer.py",
      "        return loss.detach(), infonce.detach()", "        return loss.detach(), host(infonce).to(infonce.device)",
      ("tests/test_devices.py::test_no_host_synchronisation_in_the_hot_loop",)),
    M("the trainer ignores the experience's rows", "bench/scenario.py",
      "    return (xa, xb) if rows is None else (xa[rows], xb[rows])", "    return (xa, xb)",
      ("tests/test_avalanche.py::test_an_avalanche_subset_changes_what_is_trained_and_evaluated",)),
    M("the task label is not the step", "bench/pair_data.py",
      'DataAttribute([step] * n, "targets_task_labels", use_in_getitem=True)',
      'DataAttribute([0] * n, "targets_task_labels", use_in_getitem=True)',
      ("tests/test_avalanche.py::test_experiences_carry_their_step_and_the_task_label_is_the_step",)),
    # -- figures ------------------------------------------------------------------------------------
    M("a method's colour follows its position among the plotted ones", "bench/reporting/style.py",
      'out.setdefault(label(r), style(label(r), r.get("family"), r.get("role")))',
      'out.setdefault(label(r), style(str(len(out)), r.get("family"), r.get("role")))',
      ("tests/test_figures.py::test_plotter_colours_are_the_same_in_a_full_and_a_filtered_rebuild",)),
    M("labels placed over one another", "bench/reporting/layout.py",
      "cost = (sum(_overlap(box, b) for b in placed.values())", "cost = (0",
      ("tests/test_figures.py::test_labels_of_a_dense_cluster_overlap_neither_each_other_nor_a_marker",)),
    M("line-end labels never pulled apart", "bench/reporting/layout.py",
      "while len(groups) > 1 and start(groups[-2]) + len(groups[-2]) * gap > start(groups[-1]):", "while False:",
      ("tests/test_figures.py::test_spread_keeps_order_and_gaps_within_bounds",)),
    M("the zoom takes in every reference", "bench/reporting/layout.py",
      "if r is not None and math.isfinite(r) and lo - reach * span <= r <= hi + reach * span:",
      "if r is not None and math.isfinite(r):",
      ("tests/test_figures.py::test_zoom_leaves_far_references_out_and_takes_near_ones_in",)),
    M("a subset rebuild overwrites the full one", "bench/reporting/rebuild.py",
      "target = stream_dir if out is None else Path(out)", "target = stream_dir",
      ("tests/test_figures.py::test_a_subset_goes_to_out_and_leaves_the_full_rebuild_untouched",)),
    # -- the Avalanche bridge ---------------------------------------------------------------------------
    M("bridge: a mixed batch goes through the first pair's heads", "bench/bridge.py",
      "lin = self.head(label, side)\n            out[idx]", "lin = self.head(groups[0][0], side)\n            out[idx]",
      ("tests/test_bridge.py::test_avalanche_replay_through_pair_buffer_never_mixes_pairs",)),
    M("bridge: InfoNCE across the pairs of a mixed batch", "bench/bridge.py",
      "total = total + len(idx) * info_nce(za[idx], zb[idx], self.loss_cfg)",
      "total = total + len(idx) * info_nce(za, zb, self.loss_cfg)",
      ("tests/test_bridge.py::test_avalanche_replay_through_pair_buffer_never_mixes_pairs",)),
    M("the run's schedule not stepped", "bench/trainer.py",
      "            self.plan.schedule.step()", "            pass",
      ("tests/test_training_options.py::test_linear_schedule_decays_to_zero_within_each_step",)),
    M("a method's before_update runs before its after_backward", "bench/trainer.py",
      "        self.after_backward()\n        self.before_update()\n        opt.step()",
      "        self.before_update()\n        self.after_backward()\n        opt.step()",
      ("tests/test_hook_order.py::test_hooks_run_in_the_documented_order_with_the_documented_state",)),
    M("bridge: the trainer's after_backward phase skipped", "bench/bridge.py",
      "            self.trainer.after_backward()", "            pass",
      ("tests/test_bridge.py::test_every_method_inside_naive_equals_the_runner",)),
    M("bridge: PairBuffer's groups not balanced", "bench/bridge.py",
      "            group.resize(agent_state, size)", "            pass",
      ("tests/test_bridge.py::test_avalanche_replay_through_pair_buffer_never_mixes_pairs",)),
    M("bridge: metrics read the wrong column", "bench/bridge.py",
      "col, key = self.columns[label], (stream, label, id(exp.dataset))",
      "col, key = len(self.columns) - 1 - self.columns[label], (stream, label, id(exp.dataset))",
      ("tests/test_bridge.py::test_metrics_reach_avalanche_loggers_with_the_run_files_numbers",)),
    M("DNS ignores the accumulation precision", "methods/dns.py",
      'dtype = torch.float64 if self.options.accumulate == "float64" else torch.float32', "dtype = torch.float64",
      ("tests/test_dns.py::test_covariances_accumulate_in_the_chosen_precision",)),
    M("C-Flat's closure evaluations not clipped", "bench/trainer.py",
      "            self.after_backward()\n            return ctx.loss",
      "            self._call(\"after_backward\")\n            return ctx.loss",
      ("tests/test_cflat.py::test_every_closure_evaluation_is_clipped",)),
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


def pytest(root: Path, tests: tuple[str, ...], *extra: str, zygote: Zygote | None = None) -> tuple[int, str, float]:
    """Run ``tests`` in ``root``: (exit code, what to show, seconds) — forked from ``zygote`` when given, else
    in a fresh interpreter. The summary names the first failing test (``-x`` stops there), so a list entry can
    be narrowed to the test that catches it. A run that outlives TIMEOUT is stopped and reported with the end
    of its output (pytest's faulthandler dumps the stacks of a test that hangs), never left to stall the
    whole check."""
    t0 = time.perf_counter()
    args = ["-x", "-q", "-p", "no:cacheprovider", *extra, *tests]
    if zygote is not None:
        code, out = zygote.run(root, args)
    else:
        env = dict(os.environ, PYTHONPATH=str(root), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=root, env=env, capture_output=True,
                               text=True, timeout=TIMEOUT)
            code, out = r.returncode, r.stdout
        except subprocess.TimeoutExpired as e:
            code, out = TIMED_OUT, e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    lines = out.strip().splitlines()
    if code == TIMED_OUT:
        tail = "\n        ".join(lines[-15:])
        return TIMED_OUT, f"timed out after {TIMEOUT} s; last output:\n        {tail}", time.perf_counter() - t0
    failed = [ln.split()[1] for ln in lines if ln.startswith("FAILED ")][:1]
    last = (lines or [""])[-1] + (f"; first failure {failed[0].split('[')[0]}" if failed else "")
    return code, last, time.perf_counter() - t0


# What a zygote imports before it forks: the slow imports every test run repeats (torch about 2 s, avalanche
# about 8 s), never the project's own packages — each child imports the mutated copy's.
WARM = ("torch", "numpy", "pytest", "avalanche.benchmarks", "avalanche.training", "matplotlib.pyplot", "h5py",
        "tqdm")


class Zygote:
    """A warm interpreter (``WARM`` imported once) that runs each pytest selection in a forked child of its
    own: the child changes to the copy's folder, puts it first on ``sys.path`` and in ``PYTHONPATH`` (for
    the tests' own subprocesses), runs ``pytest.main`` with its output in a file, and is killed with its
    process group after TIMEOUT. One zygote per job thread, each serving one run at a time (it is
    single-threaded, so forking it is safe). Saves the imports' seconds on every mutation."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled"))
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(self, root: Path, args: list[str]) -> tuple[int, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out = Path(tempfile.mkstemp(prefix="cmcl-mutation-", suffix=".log")[1])
        self.proc.stdin.write(json.dumps({"root": str(root), "args": args, "out": str(out)}) + "\n")
        code = int(self.proc.stdout.readline())
        text = out.read_text(errors="replace")
        out.unlink()
        return code, text

    def close(self):
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def zygote_main() -> int:
    """The zygote's side: warm up, then serve one request per line of stdin."""
    import importlib
    import signal
    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:                                       # the child: one pytest run in the mutated copy
            try:
                os.setpgid(0, 0)
                fd = os.open(req["out"], os.O_WRONLY | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.chdir(req["root"])
                sys.path.insert(0, req["root"])
                os.environ["PYTHONPATH"] = req["root"]
                import pytest as _pytest
                code = int(_pytest.main(req["args"]))
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:                      # noqa: BLE001 - reported as the run's exit code
                import traceback
                traceback.print_exc()
                code = 4
            os._exit(code)
        deadline = time.monotonic() + TIMEOUT
        status = None
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(st)
            elif time.monotonic() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                status = TIMED_OUT
            else:
                time.sleep(0.05)
        print(status, flush=True)
    return 0


def run_one(m: Mutation, workdir: Path, zygote: Zygote | None = None) -> tuple[Mutation, str, str, float]:
    root = workdir / m.name.replace(" ", "_").replace("/", "_")
    copy_project(root)
    apply(root, m)
    code, last, seconds = pytest(root, m.tests, zygote=zygote)
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
    p.add_argument("--needing", metavar="PACKAGE", help="only the mutations whose tests need this optional "
                   "package (e.g. ray; by default those whose package is missing are skipped and say so)")
    p.add_argument("--baseline-marker", metavar="EXPR",
                   help="run only the selected tests matching this marker on the unmutated copy (e.g. fast): "
                        "enough to show the copy works when the whole suite has just passed on the same tree "
                        "(CI); default: every selected test")
    p.add_argument("--fresh", action="store_true", help="run each mutation's tests in a fresh interpreter "
                   "instead of a child forked from a warm one (slower; for a test that needs a clean process)")
    p.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.zygote:
        return zygote_main()
    chosen = MUTATIONS
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
        unknown = [n for n in names if n not in {m.name for m in MUTATIONS}]
        if unknown:
            raise SystemExit(f"error: unknown mutation {unknown[0]!r} (see --list)")
        chosen = [m for m in MUTATIONS if m.name in names]
    if args.needing:
        chosen = [m for m in chosen if m.needs == args.needing]
    import importlib.util
    missing = [m for m in chosen if m.needs and importlib.util.find_spec(m.needs) is None]
    for m in missing:
        print(f"skipped   {m.name}  ({m.file}; its tests need {m.needs}, not installed: run with --needing "
              f"{m.needs} where it is)")
    chosen = [m for m in chosen if m not in missing]
    if not chosen:
        print("no mutation to run")
        return 0
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
        jobs = max(1, args.jobs)
        zygotes: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(0 if args.fresh else min(jobs, len(chosen))):
            zygotes.put(Zygote())

        def one(m):
            if args.fresh:
                return run_one(m, work)
            z = zygotes.get()
            try:
                return run_one(m, work, z)
            finally:
                zygotes.put(z)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for m, verdict, last, seconds in pool.map(one, chosen):
                results.append((m, verdict))
                print(f"{verdict:9s} {m.name}  ({m.file}; {last}) [{seconds:.0f} s]", flush=True)
        while not zygotes.empty():
            zygotes.get().close()
    survivors = [m for m, v in results if v not in ("caught", "hung")]
    hung = [m for m, v in results if v == "hung"]
    print(f"\n{len(results) - len(survivors)} of {len(results)} mutations caught"
          + (f" ({len(hung)} by tests that hung: read their output above)" if hung else ""))
    for m in survivors:
        print(f"  not caught: {m.name} ({m.file})")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
