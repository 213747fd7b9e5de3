"""``report.md``: the table, the figures, the run configuration and the environment of one stream's results,
so a results folder can be shared as is. Deterministic (no timestamps): rebuilding gives the same file."""
from __future__ import annotations

import json

from .figures import FIGURES
from .records import label, row_order


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def report_md(runs: list[dict], stream: str, table: str, figures: list[str], source=None) -> str:
    """``source``: the results folder the runs were read from, when the report is written elsewhere (a
    subset drawn with ``--out``)."""
    methods = row_order(runs)
    seeds = sorted({r["seed"] for r in runs})
    first = runs[0]
    lines = [f"# cmcl-bench report: {stream}", "",
             f"{len(methods)} methods × seeds {', '.join(map(str, seeds))}, {len(first['tasks'])} steps. "
             + ("Regenerate with `python -m bench.rebuild <this folder>`." if source is None else
                f"Drawn from the run files in `{source}`: regenerate with `python -m bench.rebuild {source} "
                f"--methods {','.join(methods)} --out <folder>`."), "", "## Steps", "",
             "| step | task | modalities | metrics |", "|---|---|---|---|"]
    for j, t in enumerate(first["tasks"]):
        lines.append(f"| {j + 1} | {t['name']} | {' – '.join(t['modalities'])} | {', '.join(t['metrics'])} |")
    lines += ["", "## Results", "", table.split("\n", 2)[2].strip(), ""]
    if figures:
        lines += ["## Figures", ""]
        for name, title, note in FIGURES:
            if name in figures:
                lines += [f"### {title}", "", note, "", f"![{title}](figures/{name}.png)", ""]
        heat = [n for n in figures if n.startswith("heatmaps_")]
        if heat:
            lines += ["### Metric matrices", "",
                      "Rows: evaluated before training (0) and after each step; columns: test sets. "
                      "Mean over seeds; n/a where a task does not report the metric.", ""]
            for n in sorted(heat):
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
        notes = [f"{k} from {v}" for k, v in sorted(sources.items())]
        if any(r["config"].get("tuned") is False for r in runs if label(r) == m):
            notes.append("untuned: the stream's tuned settings have none for it")
        origin = "; ".join(notes)
        lines.append(f"- `{m}` options: `{_json(params)}`{extra}" + (f" — {origin}" if origin else ""))
    tuned = sorted({v for r in runs for v in (r["config"].get("option_sources") or {}).values() if v.startswith("tuned")})
    if tuned:
        lines += ["", "Options marked *from tuned* were chosen by `python -m bench.tune` on validation pairs "
                  "(10% of each source's training pairs held out of training; test pairs never read), "
                  "recorded with every candidate's score in "
                  + ", ".join(f"`{t[7:-1]}`" + ("" if "/" in t else " beside the stream file") for t in tuned)
                  + "; the other options are the methods' defaults."]
    banks: dict = {}
    for r in runs:
        for key, prov in (r.get("banks") or {}).items():
            banks.setdefault(key, set()).add(_json(prov))
    if banks:
        lines += ["", "## Feature banks", "",
                  "The bank files the runs read (content hash; the recipe, its version and fingerprint where "
                  "`python -m bench.prepare` made them). A file listed twice was not the same in every run.", "",
                  "| bank | content sha256 | made by |", "|---|---|---|"]
        for key in sorted(banks):
            for prov in sorted(banks[key]):
                p = json.loads(prov)
                made = (f"{p['recipe']} v{p.get('version')} ({p.get('fingerprint')})" if p.get("recipe")
                        else "imported or extracted")
                lines.append(f"| {key} | `{p.get('sha256', '')[:16]}` | {made} |")
    lines += ["", "## Environment", ""]
    envs = sorted({_json(r.get("versions", {})) for r in runs})
    for e in envs:
        lines += [f"- `{e}`"]
    return "\n".join(lines) + "\n"
