"""``report.md``: the table, the figures, the run configuration and the environment of one stream's results,
so a results folder can be shared as is. Deterministic (no timestamps): rebuilding gives the same file."""
from __future__ import annotations

import json

from ..method_spec import REFERENCES
from ..metrics import BY_KEY
from .compare import BETTER, WORSE, Comparison
from .figures import FIGURES, FOREST
from .records import label, row_order
from .tables import runs_caption


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def _signed(x: float, decimals: int) -> str:
    """``+0.12``; never ``-0.00`` (a value that rounds to 0 is shown as +0.00)."""
    return f"{round(x, decimals) + 0.0:+.{decimals}f}"


UPPER = "joint"      # the reference intransigence is measured against: trained on every pair seen so far


def intransigence_md(runs: list[dict]) -> list[str]:
    """Intransigence (Chaudhry et al., ECCV 2018) on R@10: per task, the joint model's R@10 right after the
    step minus the row's — what a method fails to learn that training on all the data so far would have;
    averaged over tasks, that is joint's Plast_R10 minus the row's, paired by run. Empty without a joint row."""
    plast = BY_KEY["plasticity_r10"]
    cmp = Comparison(runs, (plast,))
    if UPPER not in cmp.rows:
        return []
    lines = ["", f"Intransigence on R@10 (Chaudhry et al., ECCV 2018): `{UPPER}`'s R@10 on each task right after "
             "its step minus the row's, averaged over tasks (= the difference of their Plast_R10), over paired "
             "runs, with its 95 % interval; higher = learns less of each new task than training on all the data "
             "so far would:", "", "| method | intransigence R@10 |", "|---|---|"]
    for row in cmp.candidates:
        d = cmp.versus(UPPER, row, plast)
        if d.mean is None:
            continue
        half = "" if d.half is None else f" ± {d.half:.{plast.decimals}f}"
        lines.append(f"| {row} | {_signed(d.mean, plast.decimals)}{half} |")
    return lines


def comparisons_md(runs: list[dict], reference: str | None = None) -> list[str]:
    """The paired comparisons behind the table's marks: for R@10, BWT_R10 and Acc, each row minus the
    reference with its interval and probability of improvement; the interquartile means from 4 runs."""
    metrics = tuple(BY_KEY[k] for k in FOREST)
    cmp = Comparison(runs, metrics, reference)
    if cmp.reference is None:
        return ["## Paired comparisons", "", "No naive method among the rows and no --compare: nothing to "
                "compare against.", ""]
    lines = ["## Paired comparisons", "",
             f"Each row minus `{cmp.reference}` over runs paired by seed, task order and world: the mean difference "
             "(points; for every column here higher is better), its 95 % stratified t interval, and the "
             "probability of improvement P (the share of pairs where the row does better; ties count half). "
             f"{BETTER} / {WORSE}: the interval excludes 0.", "",
             "| method | pairs | " + " | ".join(f"{m.title} − {cmp.reference} | P" for m in metrics) + " |",
             "|---|---|" + "---|---|" * len(metrics)]
    for row in cmp.rows:
        if row == cmp.reference or cmp.roles[row] in REFERENCES:
            continue
        ds = [cmp.versus(row, cmp.reference, m) for m in metrics]
        cells = []
        for m, d in zip(metrics, ds):
            if d.mean is None:
                cells += ["–", "–"]
                continue
            half = "" if d.half is None else (f" [{_signed(d.mean - d.half, m.decimals)}, "
                                              f"{_signed(d.mean + d.half, m.decimals)}]")
            cells += [f"{_signed(d.mean, m.decimals)}{half}{cmp.mark(row, m) and ' ' + cmp.mark(row, m)}",
                      "–" if d.p_improve is None else f"{d.p_improve:.2f}"]
        lines.append(f"| {row} | {max(d.n for d in ds)} | " + " | ".join(cells) + " |")
    lines += intransigence_md(runs)
    stability = [(m, cmp.rank_stability(m)) for m in metrics]
    if any(s is not None for _, s in stability):
        lines += ["", "Rank stability: Kendall's τ between the ranking of the continual-learning methods in each "
                  "other task order × world (means over its seeds) and in the stream file's own (order 0, world 0); "
                  "1 = the same ranking, 0 = unrelated:", ""]
        for m, s in stability:
            if s is not None:
                lines.append(f"- {m.title}: mean τ {s[0]:.2f}, lowest {s[1]:.2f} ({s[2]} other cells)")
    robust = [(row, [cmp.robust(row, m.key) for m in metrics]) for row in cmp.rows]
    if any(v is not None for _, vs in robust for v in vs):
        lines += ["", "Interquartile means (the mean of the middle half of the runs, from 4 runs; Agarwal et al., "
                  "NeurIPS 2021) with their 95 % stratified bootstrap intervals (2,000 resamples, seed 0; a "
                  "percentile bootstrap is narrower than it should be with few runs):", "",
                  "| method | " + " | ".join(f"IQM {m.title}" for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
        for row, vs in robust:
            lines.append(f"| {row} | " + " | ".join("–" if v is None else f"{v[0]:.{m.decimals}f} [{v[1]:.{m.decimals}f}, "
                                                    f"{v[2]:.{m.decimals}f}]" for m, v in zip(metrics, vs)) + " |")
    return lines + [""]


def report_md(runs: list[dict], stream: str, table: str, figures: list[str], source=None,
              reference: str | None = None) -> str:
    """``source``: the results folder the runs were read from, when the report is written elsewhere (a
    subset drawn with ``--out``); ``reference``: the row compared with (``--compare``)."""
    methods = row_order(runs)
    first = next((r for r in runs if not r["config"].get("order")), runs[0])
    lines = [f"# cmcl-bench report: {stream}", "",
             f"{len(methods)} methods × {runs_caption(runs)}, {len(first['tasks'])} steps. "
             + ("Regenerate with `python -m bench.rebuild <this folder>`." if source is None else
                f"Drawn from the run files in `{source}`: regenerate with `python -m bench.rebuild {source} "
                f"--methods {','.join(methods)} --out <folder>`."), "", "## Steps", "",
             "| step | task | modalities | metrics |", "|---|---|---|---|"]
    for j, t in enumerate(first["tasks"]):
        lines.append(f"| {j + 1} | {t['name']} | {' – '.join(t['modalities'])} | {', '.join(t['metrics'])} |")
    lines += ["", "## Results", "", table.split("\n", 2)[2].strip(), ""]
    lines += comparisons_md(runs, reference)
    if figures:
        lines += ["## Figures", ""]
        for name, title, note in FIGURES:
            if name in figures:
                lines += [f"### {title}", "", note, "", f"![{title}](figures/{name}.png)", ""]
        heat = [n for n in figures if n.startswith("heatmaps_")]
        if heat:
            lines += ["### Metric matrices", "",
                      "Rows: evaluated before training (0) and after each step; columns: test sets. "
                      "Mean over runs (in the stream file's task order); n/a where a task does not report the metric.", ""]
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
