"""The stability gap (--eval-every): within-step curves of the old tasks, their two summary metrics, the figure."""
import json

import pytest

from bench import run
from bench.metrics import stability_gap, worst_within_step

QUICK = ["--stream", "quick", "--seeds", "1", "--epochs", "1", "--no-figures"]


def test_the_gap_is_the_lowest_old_task_mean_inside_a_step_minus_before_it():
    curves = [
        # step 1, one old task: 80 → dips to 70 → recovers to 78: gap −10 (BWT alone would see −2)
        {"step": 1, "iterations": [0, 5, 10], "r10": [[80.0], [70.0], [78.0]], "align_dev": [[0.0], [0.3], [0.2]]},
        # step 2, two old tasks, the second without recall (null): 50 → 44 → 58: gap −6
        {"step": 2, "iterations": [0, 5, 10], "r10": [[50.0, None], [44.0, None], [58.0, None]],
         "align_dev": [[0.1, 0.0], [0.5, 0.3], [0.2, 0.2]]},
    ]
    assert stability_gap(curves) == pytest.approx((-10 - 6) / 2)
    assert worst_within_step(curves) == pytest.approx(0.4)              # step 2, iteration 5: (0.5 + 0.3) / 2
    flat = [{"step": 1, "iterations": [0, 5], "r10": [[80.0], [81.0]], "align_dev": [[0.0], [0.1]]}]
    assert stability_gap(flat) == 0.0 and stability_gap([]) is None and worst_within_step([]) is None


@pytest.mark.parametrize("every", [1, 4])    # 1: a probe at a step's last iteration too, right before its row
def test_eval_every_records_the_old_tasks_curves_without_changing_the_run(tmp_path, capsys, every):
    assert run.main(QUICK + ["--methods", "vanilla", "--out", str(tmp_path / "plain")]) == 0
    assert run.main(QUICK + ["--methods", "vanilla", "--eval-every", str(every), "--out", str(tmp_path / "gap")]) == 0
    plain = json.loads((tmp_path / "plain" / "quick" / "runs" / "vanilla" / "seed0.json").read_text())
    rec = json.loads((tmp_path / "gap" / "quick" / "runs" / "vanilla" / "seed0.json").read_text())
    assert rec["matrices"] == plain["matrices"]                       # evaluating inside a step changes nothing
    assert rec["config"]["eval_every"] == every and "eval_every" not in plain["config"]
    assert rec["config_hash"] != plain["config_hash"]
    assert "within_step" not in plain and "stability_gap_r10" not in plain["summary"]
    w, r10, dev = rec["within_step"], rec["matrices"]["r10"], rec["matrices"]["align_dev"]
    assert w["every"] == every and w["seconds"] > 0
    assert [c["step"] for c in w["steps"]] == list(range(1, len(rec["tasks"])))
    for c, timing in zip(w["steps"], rec["timings"]["steps"][1:]):
        s, n = c["step"], timing["iterations"]
        assert c["iterations"] == list(range(0, n, every)) + [n]
        assert all(len(point) == s for point in c["r10"] + c["align_dev"])    # the old tasks only
        assert c["r10"][0] == r10[s][:s] and c["r10"][-1] == r10[s + 1][:s]   # from the row before to the row after
        assert c["align_dev"][-1] == dev[s + 1][:s]
    assert rec["summary"]["stability_gap_r10"] == pytest.approx(stability_gap(w["steps"]))
    assert rec["summary"]["stability_gap_r10"] < 0                    # vanilla dips on quick
    assert rec["summary"]["align_dev_worst"] >= rec["summary"]["align_dev"]
    table = (tmp_path / "gap" / "quick" / "table.md").read_text()
    assert "StabGap_R10" in table and "StabGap_R10" not in (tmp_path / "plain" / "quick" / "table.md").read_text()


def test_eval_every_zero_is_a_one_line_error(tmp_path, capsys):
    assert run.main(QUICK + ["--methods", "vanilla", "--eval-every", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --eval-every must be a positive number of iterations, got 0"
    assert not (tmp_path / "quick").exists()


def test_an_edited_curve_is_refused_in_one_line(tmp_path):
    from bench.errors import BenchError
    from bench.reporting.records import read_run
    assert run.main(QUICK + ["--methods", "vanilla", "--eval-every", "8", "--out", str(tmp_path)]) == 0
    path = tmp_path / "quick" / "runs" / "vanilla" / "seed0.json"
    data = json.loads(path.read_text())
    data["within_step"]["steps"][1]["r10"][1].append(50.0)           # a value for the new task
    path.write_text(json.dumps(data))
    with pytest.raises(BenchError, match=r"step 2's 'r10' must be \d+ points of 2 values"):
        read_run(path)


def test_the_stability_gap_figure_is_drawn_from_runs_with_curves(tmp_path):
    assert run.main(["--stream", "quick", "--seeds", "1", "--epochs", "1", "--methods", "vanilla,ewc",
                     "--eval-every", "8", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "quick" / "figures" / "stability_gap.png").stat().st_size > 10_000
    assert "Stability gap: old tasks inside each step" in (tmp_path / "quick" / "report.md").read_text()
