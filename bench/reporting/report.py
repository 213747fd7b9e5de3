"""``report.md``: the table, the figures, the run configuration and the environment of one stream's results,
so a results folder can be shared as is. Deterministic (no timestamps): rebuilding gives the same file."""
from __future__ import annotations

import json

from .records import label, row_order

FIGURE_NOTES = [
    ("summary_bars", "Summary", "final R@10 and zero-shot Acc with their backward transfer, mean ± std over seeds."),
    ("stability_plasticity", "Stability–plasticity plane",
     "BWT on R@10 (x; right = less forgetting) against plasticity (y; R@10 right after each task is learned)."),
    ("curve_r10_seen", "Average R@10 over the tasks seen so far", "after each step, one line per method."),
    ("final_r10_by_pair", "Final R@10 per task, grouped by modality pair", "which pairs each method keeps or forgets."),
    ("align_dev", "Alignment-score deviation of old tasks",
     "‖A_{j;t} − A_{j;j}‖_F / ‖A_{j;j}‖_F averaged over the tasks learned before step t: the paper's stability quantity."),
    ("train_time", "Training time per step", "seconds, log scale (2 shared CPU cores are noisy: compare ratios)."),
]


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def report_md(runs: list[dict], stream: str, table: str, figures: list[str]) -> str:
    methods = row_order(runs)
    seeds = sorted({r["seed"] for r in runs})
    first = runs[0]
    lines = [f"# cmcl-bench report: {stream}", "",
             f"{len(methods)} methods × seeds {', '.join(map(str, seeds))}, {len(first['tasks'])} steps. "
             "Regenerate with `python -m bench.figures <this folder>`.", "", "## Steps", "",
             "| step | task | modalities | metrics |", "|---|---|---|---|"]
    for j, t in enumerate(first["tasks"]):
        lines.append(f"| {j + 1} | {t['name']} | {' – '.join(t['modalities'])} | {', '.join(t['metrics'])} |")
    lines += ["", "## Results", "", table.split("\n", 2)[2].strip(), ""]
    if figures:
        lines += ["## Figures", ""]
        for name, title, note in FIGURE_NOTES:
            if name in figures:
                lines += [f"### {title}", "", note, "", f"![{title}](figures/{name}.png)", ""]
        heat = [n for n in figures if n.startswith("heatmaps_")]
        if heat:
            lines += ["### Metric matrices", "",
                      "Rows: evaluated before training (0) and after each step; columns: test sets. "
                      "Mean over seeds; n/a where a task does not report the metric.", ""]
            for n in heat:
                lines.append(f"![{n}](figures/{n}.png)")
            lines.append("")
    lines += ["## Configuration", ""]
    shared = {k: first["config"].get(k) for k in ("stream", "stream_sha256", "train", "loss", "eval", "device")}
    lines += [f"- {k}: `{_json(v)}`" for k, v in shared.items()]
    for m in methods:
        cfgs = {_json({k: r["config"].get(k) for k in shared}) for r in runs if label(r) == m}
        params = next(r["config"]["method_params"] for r in runs if label(r) == m)
        extra = "" if cfgs == {_json(shared)} else f" (differs from the above: {sorted(cfgs)})"
        sources = next(r["config"].get("option_sources") or {} for r in runs if label(r) == m)
        origin = "; ".join(f"{k} from {v}" for k, v in sorted(sources.items()))
        lines.append(f"- `{m}` options: `{_json(params)}`{extra}" + (f" — {origin}" if origin else ""))
    tuned = sorted({v for r in runs for v in (r["config"].get("option_sources") or {}).values() if v.startswith("tuned")})
    if tuned:
        lines += ["", f"Options marked *from tuned* were chosen by `python -m bench.tune` on validation pairs "
                  f"(10% of each source's training pairs held out of training; test pairs never read), "
                  f"recorded with every candidate's score in {', '.join(t[7:-1] for t in tuned)} beside the "
                  f"stream file; the other options are the methods' defaults."]
    lines += ["", "## Environment", ""]
    envs = sorted({_json(r.get("versions", {})) for r in runs})
    for e in envs:
        lines += [f"- `{e}`"]
    return "\n".join(lines) + "\n"
