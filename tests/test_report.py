"""The results report from hand-written run files: table values, bolding, LaTeX, report, figures."""
import json

import pytest

from bench.metrics import summarize
from bench.rebuild import main as rebuild_main

TASKS = [{"name": "s1:text-video", "source": "s1", "modalities": ["text", "video"], "metrics": ["acc", "recall"]},
         {"name": "s2:text-audio", "source": "s2", "modalities": ["text", "audio"], "metrics": ["recall"]}]


def _run(method, seed, order, r10_final, r10_learned, acc=(30.0, 60.0, 55.0)):
    r10 = [[20.0, 10.0], [r10_learned, 12.0], [r10_final, 40.0]]
    mats = {"r1": [[v / 4 for v in row] for row in r10], "r5": [[v / 2 for v in row] for row in r10], "r10": r10,
            "acc": [[acc[0], None], [acc[1], None], [acc[2], None]],
            "align_dev": [[None, None], [0.0, None], [0.1 * order / 10, 0.0]]}
    steps = [{"step": 0, "train_seconds": 1.0, "iterations": 10}, {"step": 1, "train_seconds": 2.0, "iterations": 10}]
    return {"method": method, "seed": seed, "stream": "hand", "order": order,
            **({"role": "naive"} if method == "vanilla" else {}),
            "config": {"stream": "hand", "stream_sha256": "x", "method": method, "method_params": {"k": seed},
                       "train": {"lr": 0.1}, "loss": {}, "eval": {}, "device": "cpu"},
            "config_hash": f"h{method}", "tasks": TASKS, "matrices": mats,
            "summary": summarize(mats, 3.0), "timings": {"steps": steps, "train_seconds": 3.0},
            "versions": {"torch": "x"}}


@pytest.fixture
def hand(tmp_path):
    runs = [_run("frozen", 0, 0, 20.0, 20.0, acc=(30.0, 30.0, 30.0)), _run("frozen", 1, 0, 20.0, 20.0, acc=(30.0, 30.0, 30.0)),
            _run("vanilla", 0, 10, 40.0, 60.0), _run("vanilla", 1, 10, 44.0, 62.0),
            _run("dns", 0, 20, 55.0, 58.0), _run("dns", 1, 20, 57.0, 58.0),
            _run("joint", 0, 30, 70.0, 71.0), _run("joint", 1, 30, 70.0, 71.0)]
    for r in runs:
        p = tmp_path / "hand" / "runs" / r["method"] / f"seed{r['seed']}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(r))
    assert rebuild_main([str(tmp_path)]) == 0
    return tmp_path / "hand"


def _row(table, method):
    line = next(ln for ln in table.splitlines() if ln.startswith(f"| {method} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_values_order_and_bolding(hand):
    """Every cell by hand: the mean ± the 95 % t half-width over two seeds (t(0.975, 1) = 12.706); bold only
    where the paired interval against every other method excludes 0; ▲ / ▼ against vanilla, the naive row."""
    table = (hand / "table.md").read_text()
    methods = [ln.split("|")[1].strip() for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert methods == ["frozen", "vanilla", "dns", "joint"]        # lower reference, naive, DNS, upper
    head = _row(table, "method")
    van, dns, joint = _row(table, "vanilla"), _row(table, "dns"), _row(table, "joint")
    col = {name: i for i, name in enumerate(head)}
    # vanilla R@10 final: mean over tasks of R[T] = (40+40)/2, (44+40)/2 -> 40, 42: sd √2, se 1 -> ± 12.71
    assert van[col["R@10"]] == "41.00 ± 12.71"
    # dns 47.5, 48.5 -> 48.00 ± 6.35; paired with vanilla: 7.5, 6.5 -> 7.00 ± 6.35 > 0: bold and better
    assert dns[col["R@10"]] == "**48.00** ± 6.35 ▲"
    # BWT_R10 = R[2][0] − R[1][0]: vanilla −20, −18; dns −3, −1: each ± 12.71, their paired difference 17, 17
    assert van[col["BWT_R10"]] == "-19.00 ± 12.71" and dns[col["BWT_R10"]] == "**-2.00** ± 12.71 ▲"
    # plasticity: vanilla 50, 51; dns 49, 49: vanilla higher, but the paired interval −1.5 ± 6.35 holds 0
    assert van[col["Plast_R10"]] == "50.50 ± 6.35" and dns[col["Plast_R10"]] == "49.00 ± 0.00"
    # joint is better still but a reference: never bold, never marked
    assert joint[col["R@10"]] == "55.00 ± 0.00" and "**" not in "".join(joint) and "▲" not in "".join(joint)
    # lower is better: forgetting (vanilla 20, 18; dns 3, 1) and AlignDev (vanilla 0.1 < dns 0.2 in both seeds)
    assert dns[col["Forget_R10"]] == "**2.00** ± 12.71 ▲"
    assert van[col["AlignDev"]] == "**0.1000** ± 0.0000" and dns[col["AlignDev"]] == "0.2000 ± 0.0000 ▼"
    assert dns[col["Acc"]] == van[col["Acc"]] == "55.00 ± 0.00"          # a tie: nobody bold
    assert _row(table, "frozen")[col["runs"]] == "2"
    assert "better / worse than vanilla" in table


def test_latex_table_and_report(hand):
    tex = (hand / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\textbf{-2.00}$\pm$12.71$^{\blacktriangle}$" in tex and tex.count(r"\midrule") == 4
    report = (hand / "report.md").read_text()
    for name in ("summary", "stability_plasticity", "curve_r10_seen", "final_r10_by_task", "align_dev",
                 "train_time", "heatmaps_r10_p1", "heatmaps_acc_p1"):
        assert f"(figures/{name}.png)" in report, name
        assert (hand / "figures" / f"{name}.png").stat().st_size > 5000
        assert (hand / "figures" / f"{name}.pdf").exists()
    assert "| 2 | s2:text-audio | text – audio | recall |" in report
    assert '`dns` options: `{"k": 0}`' in report and '"lr": 0.1' in report and '{"torch": "x"}' in report
    # intransigence: joint's R@10 right after each step minus the row's; joint (71 + 40) / 2 = 55.5, vanilla
    # 50 and 51, dns 49 and 49
    assert "| vanilla | +5.00 ± 6.35 |" in report and "| dns | +6.50 ± 0.00 |" in report


def test_rebuild_is_byte_identical_and_filters_methods(hand, tmp_path):
    files = ("table.md", "table.tex", "summary.csv", "report.md")
    before = {f: (hand / f).read_bytes() for f in files}
    for f in files:
        (hand / f).unlink()
    assert rebuild_main([str(hand), "--no-figures"]) == 0
    assert {f: (hand / f).read_bytes() for f in files} == before
    assert rebuild_main([str(hand), "--methods", "vanilla,dns", "--no-figures", "--out", str(tmp_path / "sub")]) == 0
    assert "| joint |" not in (tmp_path / "sub" / "hand" / "table.md").read_text()
    assert {f: (hand / f).read_bytes() for f in files} == before


def test_a_failing_figure_leaves_the_previous_outputs_untouched(hand, monkeypatch):
    """The rebuild stages everything and swaps only when all of it succeeded: a figure that fails midway
    leaves the old tables, figures and report as they were, and no staging folder behind."""
    from bench.reporting import figures as plots
    outputs = ["table.md", "table.tex", "summary.csv", "report.md"]
    before = {f: (hand / f).read_bytes() for f in outputs}
    digest = lambda p: __import__("hashlib").sha256(p.read_bytes()).hexdigest()     # noqa: E731
    figs = {p.name: digest(p) for p in (hand / "figures").iterdir()}
    # new runs would change the table ...
    extra = _run("vanilla", 2, 10, 10.0, 90.0)
    (hand / "runs" / "vanilla" / "seed2.json").write_text(json.dumps(extra))

    def broken(self, workers=2):
        self.draw("summary")                           # one new figure is drawn, then the step fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots.Plotter, "all", broken)
    with pytest.raises(OSError):
        from bench.reporting.rebuild import rebuild
        rebuild(hand)
    assert {f: (hand / f).read_bytes() for f in outputs} == before
    assert {p.name: digest(p) for p in (hand / "figures").iterdir()} == figs
    assert not [p for p in hand.iterdir() if p.name.startswith(".") and p.name != ".rebuild.json"]


def test_a_table_mixing_code_versions_warns(hand, capsys):
    for seed, code in ((0, "0.1.0+aaaaaaa"), (1, "0.1.0+bbbbbbb")):
        p = hand / "runs" / "dns" / f"seed{seed}.json"
        r = json.loads(p.read_text())
        r["versions"]["code"] = code
        p.write_text(json.dumps(r))
    capsys.readouterr()
    assert rebuild_main([str(hand), "--no-figures"]) == 0
    assert "mixes runs of 2 code versions (0.1.0+aaaaaaa, 0.1.0+bbbbbbb)" in capsys.readouterr().err
