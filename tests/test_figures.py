"""The figures: one style per method whatever else is plotted, labels that do not overlap, zoomed axes,
subsets drawn elsewhere, the set of files a rebuild writes."""
import json
import math

import pytest
from test_report import _run

from bench.method_spec import FAMILIES
from bench.rebuild import main as rebuild_main
from bench.reporting import style as S
from bench.reporting.layout import place_labels, spread, zoom


# -------------------------------------------------------------------------------------------- styles
def test_every_registered_method_has_its_own_style_in_its_family_hue():
    import methods
    reg = methods.registry()
    seen = {}
    for name, cls in reg.items():
        st = S.style(name, cls.family, cls.role)
        assert name in S.BUILTIN, f"{name}: give it a hand-picked style in bench/reporting/style.py"
        assert S.BUILTIN[name].family == cls.family, name          # the table agrees with the method class
        assert st.family == cls.family and st.color in S.PALETTES[cls.family], name
        assert st.reference == (cls.role in ("lower-reference", "upper-reference"))
        assert (st.color, st.marker) not in seen, f"{name} looks like {seen.get((st.color, st.marker))}"
        seen[(st.color, st.marker)] = name
    assert len(set(S.BUILTIN[n].color for n in reg)) == len(reg)   # even without markers, colours differ


def test_a_new_method_and_a_variant_get_stable_styles_of_their_family():
    """Names outside the hand-picked table get a shade of their family's hue from a hash of the name: the
    same in every process (Python's own str hash is salted per process) and whatever else is plotted."""
    import subprocess
    import sys
    new, var = S.style("my-new-method", "replay"), S.style("ewc[strength=10]")
    assert new.family == "replay" and new.color in S.PALETTES["replay"]
    assert var.family == "regularisation" and var.marker != S.style("ewc").marker and var.color != S.style("ewc").color
    assert S.style("unknown").family == "other"
    code = ("from bench.reporting.style import style; "
            "print(style('my-new-method', 'replay'), style('ewc[strength=10]'))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert outs == {f"{new} {var}\n"}


def _write(root, runs):
    for r in runs:
        p = root / "hand" / "runs" / r.get("label", r["method"]) / f"seed{r['seed']}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(r))


def _hand_runs(methods_and_families):
    runs = []
    for k, (m, fam, role) in enumerate(methods_and_families):
        for seed in (0, 1):
            r = _run(m, seed, 10, 40.0 + k + seed, 60.0 - k)
            r.pop("order")
            r.update(role=role, family=fam, schema=1)
            for st in r["timings"]["steps"]:                 # losses per epoch, as run files record them
                st["infonce"] = [2.0 - 0.1 * e - 0.01 * k for e in range(3)]
                st["loss"] = [v + 0.1 for v in st["infonce"]]
            if "[" in m:
                r["method"], r["label"] = m.split("[")[0], m
            runs.append(r)
    return runs


FULL = [("frozen", "reference", "lower-reference"), ("vanilla", "naive", "naive"),
        ("ewc", "regularisation", "baseline"), ("ewc[strength=10]", "regularisation", "baseline"),
        ("er", "replay", "baseline"), ("my-method", "null-space", "baseline"), ("dns", "null-space", "proposed"),
        ("joint", "reference", "upper-reference")]


def test_plotter_colours_are_the_same_in_a_full_and_a_filtered_rebuild():
    from bench.reporting.figures import Plotter
    runs = _hand_runs(FULL)
    full = Plotter(runs, None, "hand")
    for keep in (["dns", "my-method"], ["ewc[strength=10]", "frozen", "er"], ["joint"]):
        sub = Plotter([r for r in runs if r.get("label", r["method"]) in keep], None, "hand")
        assert sub.color == {m: full.color[m] for m in keep}
        assert sub.marker == {m: full.marker[m] for m in keep}
    # families sit together in the figures, references at the ends
    assert full.methods == ["frozen", "vanilla", "ewc", "ewc[strength=10]", "er", "my-method", "dns", "joint"]


# -------------------------------------------------------------------------------------------- layout
def _boxes(points, sizes, offsets):
    return [(x + dx - w / 2, y + dy - h / 2, x + dx + w / 2, y + dy + h / 2)
            for (x, y), (w, h), (dx, dy) in zip(points, sizes, offsets)]


def _overlap(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_labels_of_a_dense_cluster_overlap_neither_each_other_nor_a_marker():
    # 17 points in a 60 × 40 px cluster (the stability–plasticity plane's crowd), labels 40 × 10 px
    points = [(200 + (k * 37) % 60, 150 + (k * 23) % 40) for k in range(17)]
    sizes = [(40, 10)] * 17
    bounds = (0, 0, 600, 400)
    offsets = place_labels(points, sizes, bounds, radius=4, step=9)
    boxes = _boxes(points, sizes, offsets)
    for i, a in enumerate(boxes):
        assert bounds[0] <= a[0] and a[2] <= bounds[2] and bounds[1] <= a[1] and a[3] <= bounds[3]
        for j, b in enumerate(boxes):
            assert j == i or not _overlap(a, b), (i, j)
        for j, (x, y) in enumerate(points):
            assert not _overlap(a, (x - 4, y - 4, x + 4, y + 4)), (i, j)
    # an isolated point keeps its label right beside it (first ring, to the right)
    (dx, dy), = place_labels([(100, 100)], [(40, 10)], bounds, radius=4)
    assert dy == 0 and 0 < dx <= 4 + 2 + 20


def test_labels_avoid_obstacles():
    bar = (90, 97, 160, 103)                       # an error bar to the right of the point
    (dx, dy), = place_labels([(100, 100)], [(40, 10)], (0, 0, 600, 400), radius=4, obstacles=[bar])
    assert not _overlap((100 + dx - 20, 100 + dy - 5, 100 + dx + 20, 100 + dy + 5), bar)


def test_spread_keeps_order_and_gaps_within_bounds():
    ys = spread([5.0, 5.1, 5.2, 0.0, 9.9], gap=1.0, low=0.0, high=10.0)
    order = sorted(range(5), key=lambda i: [5.0, 5.1, 5.2, 0.0, 9.9][i])
    placed = [ys[i] for i in order]
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(placed, placed[1:]))
    assert 0.0 <= min(ys) and max(ys) <= 10.0
    assert abs(ys[1] - 5.1) < 1e-9                 # a crowded group is centred on its members
    assert spread([1.0, 3.0], gap=0.5) == [1.0, 3.0]   # labels with room stay where they are


def test_zoom_leaves_far_references_out_and_takes_near_ones_in():
    lo, hi = zoom([55.0, 58.5], [19.9])             # frozen's plasticity would squeeze the methods into a band
    assert 54 < lo < 55 and 58.5 < hi < 59
    lo, hi = zoom([55.0, 58.5], [57.6, 59.0])       # joint within reach widens the axis
    assert hi > 59.0
    assert zoom([3.0, 3.0], []) [0] < 3.0 < zoom([3.0, 3.0], [])[1]
    assert all(math.isfinite(v) for v in zoom([], [None]))


# -------------------------------------------------------------------------------------------- CLI
def _tree(d):
    """Every file's content hash and modification time (hashes, not bytes: a failing comparison stays cheap
    to print)."""
    import hashlib
    return {p.relative_to(d).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in d.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built") / "results"
    _write(root, _hand_runs(FULL))
    assert rebuild_main([str(root)]) == 0
    return root


@pytest.fixture
def full(built, tmp_path):
    """A fully rebuilt results folder of its own for each test (a copy: times and bytes kept)."""
    import shutil
    shutil.copytree(built, tmp_path / "results")
    return tmp_path / "results" / "hand"


def test_a_subset_goes_to_out_and_leaves_the_full_rebuild_untouched(full, tmp_path, capsys):
    before = _tree(full)
    out = tmp_path / "subset"
    assert rebuild_main([str(full.parent), "--methods", "dns,ewc[strength=10]", "--out", str(out)]) == 0
    assert _tree(full) == before
    table = (out / "hand" / "table.md").read_text()
    assert "| dns |" in table and "| ewc[strength=10] |" in table and "| vanilla |" not in table
    assert (out / "hand" / "figures" / "summary.png").stat().st_size > 5000
    assert not (out / "hand" / "runs").exists()
    report = (out / "hand" / "report.md").read_text()
    assert f"Drawn from the run files in `{full}`" in report and "--methods ewc[strength=10],dns" in report
    # without --methods, --out writes the whole table elsewhere
    assert rebuild_main([str(full.parent), "--out", str(tmp_path / "copy"), "--no-figures"]) == 0
    assert (tmp_path / "copy" / "hand" / "table.md").read_bytes() == (full / "table.md").read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--methods", "dns,nope,ewc[x=1]"], "no runs of nope, ewc[x=1]; the runs there are of dns, er, ewc, "
                                         "ewc[strength=10], frozen, joint, my-method, vanilla"),
    (["--methods", "dns"], "--methods draws a subset: give --out DIR for it"),
    (["--methods", " , "], "--methods: no method named"),
    (["--methods", "dns", "--out", "{root}"], "writes into {root}/hand itself"),
])
def test_bad_subset_requests_are_one_line_errors_that_write_nothing(full, tmp_path, capsys, argv, message):
    root = full.parent
    before = _tree(root)
    argv = [a.replace("{root}", str(root)) for a in argv]
    if "--out" not in argv and "nope" in argv[1]:
        argv += ["--out", str(tmp_path / "sub")]
    capsys.readouterr()
    assert rebuild_main([str(root)] + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.replace("{root}", str(root)) in err, err
    assert _tree(root) == before and not (tmp_path / "sub").exists()


def test_the_files_a_rebuild_writes(full):
    names = sorted(p.name for p in (full / "figures").iterdir())
    stems = {"summary", "forest", "stability_plasticity", "curve_r10_seen", "final_r10_by_task", "align_dev", "train_time",
             "heatmaps_r10_p1", "heatmaps_acc_p1", "loss_curves"}
    assert names == sorted(f"{s}.{e}" for s in stems for e in ("png", "pdf"))
    from PIL import Image

    from bench.reporting.figures import DPI, PAGE
    for s in stems:                                 # at most a page wide (plus the crop's margin)
        w, _ = Image.open(full / "figures" / f"{s}.png").size
        assert w <= (PAGE + 0.3) * DPI, (s, w)


def test_heatmaps_are_paged(tmp_path):
    from bench.reporting.figures import HEATMAP_PANELS, Plotter
    many = [(f"m{k:02d}", FAMILIES[2 + k % 5], "baseline") for k in range(2 * HEATMAP_PANELS + 1)]
    p = Plotter(_hand_runs(many), tmp_path, "hand")
    assert [j for j in p.jobs() if j.startswith("heatmaps:r10")] == ["heatmaps:r10:1", "heatmaps:r10:2", "heatmaps:r10:3"]
    p.draw("heatmaps:r10:3")
    assert (tmp_path / "heatmaps_r10_p3.png").exists()


def test_a_new_method_never_takes_a_built_in_methods_style():
    from bench.reporting.style import BUILTIN, PALETTES, style
    builtin = {(b.family, b.color, b.marker) for b in BUILTIN.values()}
    assert (style("rwalk", "regularisation").color, style("rwalk", "regularisation").marker) != \
        (BUILTIN["si"].color, BUILTIN["si"].marker)             # rwalk's name hashes to si's pair
    for fam in PALETTES:
        for i in range(300):
            s = style(f"new-method-{i}", fam)
            assert (s.family, s.color, s.marker) not in builtin, (fam, i)
            assert s == style(f"new-method-{i}", fam)               # deterministic


# -------------------------------------------------------------------------------------------- what is drawn
def _drawn(monkeypatch, runs, job, tmp_path):
    """The matplotlib figure a job draws (captured before it is saved and closed)."""
    from bench.reporting.figures import Plotter
    got = {}
    monkeypatch.setattr(Plotter, "save", lambda self, fig, name, tight=True: got.setdefault(name, fig))
    Plotter(runs, tmp_path, "hand").draw(job)
    return got


def test_summary_draws_95_percent_t_intervals_on_an_axis_of_at_least_five_points(monkeypatch, tmp_path):
    from bench.reporting.figures import SUMMARY_MIN_SPAN
    from bench.reporting.intervals import t_quantile
    runs = _hand_runs(FULL)
    fig = _drawn(monkeypatch, runs, "summary", tmp_path)["summary"]
    ax = fig.axes[0]                                           # final R@10
    lo, hi = ax.get_xlim()
    assert hi - lo >= SUMMARY_MIN_SPAN - 1e-9                  # the methods span 6 points here: not blown up
    vals = [r["summary"]["r10"] for r in runs if r.get("label", r["method"]) == "ewc"]
    mean = sum(vals) / 2
    half = t_quantile(0.95, 1) * abs(vals[0] - vals[1]) / 2   # sd = |a − b|/√2, divided by √2 again
    bars = [c for c in ax.containers if abs(c.lines[0].get_xdata()[0] - mean) < 1e-9]
    x0, x1 = sorted(bars[0].lines[2][0].get_segments()[0][:, 0])
    assert (x0, x1) == pytest.approx((mean - half, mean + half))
    assert "95 % interval over runs" in fig._suptitle.get_text()


def test_train_time_draws_no_ratios(monkeypatch, tmp_path):
    fig = _drawn(monkeypatch, _hand_runs(FULL), "train_time", tmp_path)["train_time"]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert not any(t.startswith("×") for t in texts) and "method_cost.py" in fig.axes[0].get_xlabel()


def test_the_last_heatmap_page_is_as_tall_as_its_rows(monkeypatch, tmp_path):
    from bench.reporting.figures import HEATMAP_PANELS
    many = [(f"m{k:02d}", FAMILIES[2 + k % 5], "baseline") for k in range(HEATMAP_PANELS + 3)]
    runs = _hand_runs(many)
    full = _drawn(monkeypatch, runs, "heatmaps:r10:1", tmp_path)["heatmaps_r10_p1"]
    last = _drawn(monkeypatch, runs, "heatmaps:r10:2", tmp_path)["heatmaps_r10_p2"]
    assert last.get_figheight() < 0.6 * full.get_figheight()          # one row of three, not three rows


def test_a_curve_that_starts_late_says_why_and_leaders_leave_their_labels_side(monkeypatch, tmp_path):
    runs = _hand_runs(FULL)
    for r in runs:                                             # step 1 reports Acc only
        r["tasks"] = [dict(r["tasks"][0], metrics=["acc"]), r["tasks"][1]]
        r["matrices"]["r10"] = [[None, row[1]] for row in r["matrices"]["r10"]]
    fig = _drawn(monkeypatch, runs, "curves", tmp_path)["curve_r10_seen"]
    assert any("start after step 2: step 1 (" in t.get_text() for t in fig.texts)
    ann = [t for ax in fig.axes for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert ann and all(t.arrowprops.get("relpos") == (0, 0.5) for t in ann)
