"""DER, DER++, Co2L and CILA: stored-embedding distillation, replayed InfoNCE, asymmetric negatives of the same
modality pair only, relation distillation, CILA's adaptive coefficient, and their effect on real runs."""
import json

import pytest
import torch
from conftest import perturb, run_method, scalar

from bench import run, streams
from bench.heads import Heads
from bench.loss import LossConfig, info_nce
from bench.method import Context, Options
from bench.trainer import TrainConfig
from methods.cila import CILA, adaptive_coefficient
from methods.co2l import Co2L, asymmetric_info_nce, relation_distillation
from methods.der import DER
from methods.derpp import DERpp

# distinct widths: a group given to the wrong head, or a pair swapped, fails on the shapes
WIDTH = {"text": 5, "video": 6, "audio": 7, "vision": 9}
OUT = 4


class _Task:
    def __init__(self, pair):
        self.pair = pair


def _heads(seed=1):
    heads = Heads(WIDTH, OUT)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in heads.linears.values():
            lin.weight.add_(0.3 * torch.randn(lin.weight.shape, generator=g))
    return heads


def _ctx(heads, pairs):
    return Context(heads=heads, loss_cfg=LossConfig(), device=torch.device("cpu"), seed=0, tasks=[_Task(p) for p in pairs])


def _enter(ctx, step, n=24):
    """Make ``step`` the current step, with random training matrices whose first column is the step id."""
    ctx.step, ctx.task = step, ctx.tasks[step]
    a, b = ctx.pair
    g = torch.Generator().manual_seed(100 + step)
    xa, xb = torch.randn(n, WIDTH[a], generator=g), torch.randn(n, WIDTH[b], generator=g)
    xa[:, 0] = xb[:, 0] = step
    ctx.train = (xa, xb)


def _batch(ctx, n=12):
    """A current batch of the step in ``ctx`` (first rows of its training matrices) and its plain loss."""
    a, b = ctx.pair
    ctx.xa, ctx.xb = ctx.train[0][:n], ctx.train[1][:n]
    ctx.za, ctx.zb = ctx.heads[a](ctx.xa), ctx.heads[b](ctx.xb)
    ctx.loss = info_nce(ctx.za, ctx.zb, ctx.loss_cfg)
    return ctx


def _current(heads, pairs, step):
    """A context on ``step`` holding one batch of it."""
    ctx = _ctx(heads, pairs)
    _enter(ctx, step)
    return _batch(ctx)


def _run_steps(method, ctx, steps):
    """Steps ``steps[:-1]`` finished (buffer filled at their ends), the last one started."""
    for s in steps[:-1]:
        _enter(ctx, s)
        method.before_training_exp(ctx)
        method.after_training_exp(ctx)
    _enter(ctx, steps[-1])
    method.before_training_exp(ctx)
    return method


# --- DER / DER++ ----------------------------------------------------------------------------------------------
def test_der_stores_the_step_end_embeddings_and_distils_them():
    heads = _heads()
    ctx = _ctx(heads, [("text", "video"), ("text", "audio")])
    der = _run_steps(DER(seed=0), ctx, [0, 1])
    assert der._eligible == [0] and der.in_play == {"text", "audio"}
    groups = der.draw()
    t, pair, xa, xb, za_old, zb_old = groups[0]
    assert t == 0 and pair == ("text", "video") and za_old.shape == (len(xa), OUT)
    # what is stored is the model's output for the pair when the step ended: nothing moved since
    assert torch.equal(za_old, heads["text"](xa).detach()) and torch.equal(zb_old, heads["video"](xb).detach())
    assert scalar(der.logit_term(heads, groups)) == 0.0
    perturb(heads["text"])
    term = der.logit_term(heads, groups)
    assert scalar(term) > 1e-3
    # heads = pair: the shared text head is distilled; the video head (not trained this step) gets no gradient
    term.backward()
    assert heads["text"].weight.grad.abs().sum() > 0 and heads["video"].weight.grad is None
    # the loss gets alpha times the term
    ctx = _batch(ctx)
    der._gen = torch.Generator().manual_seed(5)
    before = scalar(ctx.loss)
    der.before_backward(ctx)
    der._gen = torch.Generator().manual_seed(5)
    assert scalar(ctx.loss) == pytest.approx(before + 3.0 * scalar(der.logit_term(heads, der.draw())), rel=1e-6)


@pytest.mark.parametrize("same_batch", [True, False])
def test_derpp_is_der_plus_beta_times_the_replayed_infonce(same_batch):
    heads = _heads()
    pairs = [("text", "video"), ("audio", "video"), ("text", "audio")]
    der = _run_steps(DER(seed=0, alpha=2.0, buffer_size=40, replay_batch=16), _ctx(heads, pairs), [0, 1, 2])
    dpp = _run_steps(DERpp(seed=0, alpha=2.0, beta=0.7, buffer_size=40, replay_batch=16, same_batch=same_batch),
                     _ctx(heads, pairs), [0, 1, 2])
    assert der._eligible == dpp._eligible == [0, 1]          # both pairs share a modality with text–audio
    perturb(heads["text"]), perturb(heads["audio"], seed=8)
    state = dpp._gen.get_state()
    c1, c2 = _current(heads, pairs, 2), _current(heads, pairs, 2)
    der.before_backward(c1)
    dpp.before_backward(c2)
    # the groups DER++ drew: the first (MSE) is DER's, the second (InfoNCE) the same or the next draw
    dpp._gen.set_state(state)
    first = dpp.draw()
    second = first if same_batch else dpp.draw(min_group=2)
    assert second and all(len(g[2]) >= 2 for g in second)
    assert same_batch or [g[2].tolist() for g in first] != [g[2].tolist() for g in second]   # an independent draw
    nce = dpp.replay_infonce(heads, second, c2.loss_cfg)
    manual = sum(len(g[2]) * info_nce(heads[g[1][0]](g[2]), heads[g[1][1]](g[3]), c2.loss_cfg) for g in second) \
        / sum(len(g[2]) for g in second)
    assert scalar(nce) == pytest.approx(scalar(manual), rel=1e-6) and scalar(nce) > 0.1
    assert scalar(c2.loss) - scalar(c1.loss) == pytest.approx(0.7 * scalar(nce), rel=1e-5)


# --- Co2L -----------------------------------------------------------------------------------------------------
def test_asymmetric_infonce_anchors_only_the_current_pairs():
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(6, OUT, generator=g), torch.randn(6, OUT, generator=g)
    na, nb = torch.randn(4, OUT, generator=g), torch.randn(4, OUT, generator=g)
    cfg = LossConfig(temperature=0.2)
    assert torch.equal(asymmetric_info_nce(za, zb, None, None, cfg), info_nce(za, zb, cfg))
    lab = torch.arange(6)
    ce = torch.nn.functional.cross_entropy
    manual = 0.5 * (ce(za @ torch.cat([zb, nb]).T / 0.2, lab) + ce(zb @ torch.cat([za, na]).T / 0.2, lab))
    assert scalar(asymmetric_info_nce(za, zb, na, nb, cfg)) == pytest.approx(scalar(manual), rel=1e-6)
    # extra negatives can only make the anchors' task harder; one-way loss uses only the b-side negatives
    assert scalar(asymmetric_info_nce(za, zb, na, nb, cfg)) > scalar(info_nce(za, zb, cfg))
    one_way = LossConfig(temperature=0.2, direction="a2b")
    a2b = ce(za @ torch.cat([zb, nb]).T / 0.2, lab)
    assert scalar(asymmetric_info_nce(za, zb, na * 100, nb, one_way)) == pytest.approx(scalar(a2b))


def test_co2l_extra_negatives_come_only_from_buffered_pairs_of_the_same_modality_pair():
    heads = _heads()
    # steps 1 and 2 are text–audio (step 2 stored the other way round), step 4 trains text–audio again
    pairs = [("text", "video"), ("text", "audio"), ("audio", "text"), ("audio", "video"), ("text", "audio")]
    co2l = _run_steps(Co2L(seed=0, buffer_size=200, replay_batch=48), _ctx(heads, pairs), [0, 1, 2, 3, 4])
    assert co2l._eligible == [0, 1, 2, 3]
    ctx = _current(heads, pairs, 4)
    seen = set()
    for _ in range(30):
        groups = co2l.replay_buffer.sample(48, co2l._gen, 0, co2l._eligible)
        same, others = co2l.split_replay(groups, ctx.pair)
        for t, xa, xb in same:
            assert t in (1, 2) and xa.shape[1] == WIDTH["text"] and xb.shape[1] == WIDTH["audio"]
            assert (xa[:, 0] == t).all() and (xb[:, 0] == t).all()       # each group from one step
        assert all(set(p) != {"text", "audio"} for _, p, *_ in others)
        contrastive, ird, _ = co2l.losses(ctx, groups)
        assert co2l.last_negative_tasks == [t for t, *_ in same]
        seen.update(co2l.last_negative_tasks)
        if same:
            na = heads["text"](torch.cat([xa for _, xa, _ in same]))
            nb = heads["audio"](torch.cat([xb for _, _, xb in same]))
            expect = asymmetric_info_nce(ctx.za, ctx.zb, na, nb, ctx.loss_cfg)
            assert scalar(contrastive) == pytest.approx(scalar(expect), rel=1e-6)
        else:
            assert contrastive is ctx.loss
    assert seen == {1, 2}
    # switched off: the plain InfoNCE of the current batch
    co2l.options = Options({**co2l.params, "negatives": False})
    assert co2l.losses(ctx, co2l.replay_buffer.sample(48, co2l._gen, 0, co2l._eligible))[0] is ctx.loss


@pytest.mark.parametrize("relation", ["cross", "views"])
def test_co2l_ird_is_zero_for_an_unchanged_model_and_positive_after_a_change(relation):
    heads = _heads()
    pairs = [("text", "video"), ("text", "audio")]
    ctx = _ctx(heads, pairs)
    co2l = Co2L(seed=0, relation=relation, current_temp=0.2, past_temp=0.2)   # κ* = κ: a pure preservation term
    _enter(ctx, 0)
    co2l.before_training_exp(ctx)
    assert co2l.old == {}                                                     # Co2L distils from the second task
    assert co2l.losses(_batch(ctx), [])[1] is None
    co2l.after_training_exp(ctx)
    _enter(ctx, 1)
    co2l.before_training_exp(ctx)
    assert set(co2l.old) == {"text", "audio"}
    groups = co2l.replay_buffer.sample(32, co2l._gen, 0, co2l._eligible)
    assert [p for _, p, *_ in groups] == [("text", "video")]                  # a replayed group of the old pair
    _, ird, _ = co2l.losses(_batch(ctx), groups)
    assert abs(scalar(ird)) < 1e-6
    perturb(heads["text"])
    _, ird, _ = co2l.losses(_batch(ctx), groups)
    assert scalar(ird) > 1e-3
    ird.backward()
    assert heads["text"].weight.grad.abs().sum() > 0 and heads["video"].weight.grad is None
    # the paper's κ* = 0.01 < κ = 0.2: the target is sharper than the current rows, so the term is not zero at
    # the snapshot (documented)
    sharp = Co2L(seed=0, relation=relation)
    _enter(ctx, 0)
    sharp.before_training_exp(ctx), sharp.after_training_exp(ctx)
    _enter(ctx, 1)
    sharp.before_training_exp(ctx)
    assert scalar(sharp.losses(_batch(ctx), [])[1]) > 1e-2
    # the loss: contrastive + λ · IRD
    perturb(heads["audio"], seed=9)
    co2l.options = Options({**co2l.params, "ird": 2.5})
    co2l._lambda = 2.5
    _batch(ctx)
    co2l._gen = torch.Generator().manual_seed(3)
    contrastive, ird, _ = co2l.losses(ctx, co2l.replay_buffer.sample(64, torch.Generator().manual_seed(3), 0,
                                                                      co2l._eligible))
    co2l.before_backward(ctx)
    assert scalar(ctx.loss) == pytest.approx(scalar(contrastive) + 2.5 * scalar(ird), rel=1e-6)


@pytest.mark.parametrize("relation", ["cross", "views"])
def test_relation_distillation_never_relates_samples_of_different_groups(relation):
    """One masked matrix product for all groups equals the sum of the groups taken one by one."""
    g = torch.Generator().manual_seed(0)
    sizes = [5, 3, 4]
    za, zb = [torch.randn(n, OUT, generator=g) for n in sizes], [torch.randn(n, OUT, generator=g) for n in sizes]
    oa = [z + 0.3 * torch.randn(z.shape, generator=g) for z in za]
    ob = [z + 0.3 * torch.randn(z.shape, generator=g) for z in zb]
    one_by_one = [relation_distillation(*z, 0.2, 0.01, relation) for z in zip(za, zb, oa, ob)]
    kl, rows = relation_distillation(*(torch.cat(z) for z in (za, zb, oa, ob)), 0.2, 0.01, relation, sizes=sizes)
    assert rows == sum(r for _, r in one_by_one) == 2 * sum(sizes)
    assert scalar(kl) == pytest.approx(sum(scalar(k) for k, _ in one_by_one), rel=1e-5)


# --- CILA -----------------------------------------------------------------------------------------------------
def test_cila_coefficient_follows_its_formula():
    c, d = [2.0, 1.0, 3.0], [0.5, 0.25, 0.75]          # means 2.0 and 0.5
    assert adaptive_coefficient(c, d, alpha=2.0) == pytest.approx(2.0 * 0.5 / 2.0)           # 0.5
    assert adaptive_coefficient(c, d, alpha=2.0, ratio="contrastive/distill") == pytest.approx(2.0 * 2.0 / 0.5)
    assert adaptive_coefficient(c[:1], d[:1], alpha=3.0) == pytest.approx(0.75)
    # a ratio of means, not a mean of per-step ratios ((1/1 + 1/4) / 2 = 0.625)
    assert adaptive_coefficient([1.0, 4.0], [1.0, 1.0], alpha=1.0) == pytest.approx(2.0 / 5.0)
    assert adaptive_coefficient([], [], alpha=2.0, initial=0.4) == 0.4                       # nothing to go by
    assert adaptive_coefficient([1.0], [0.0], ratio="contrastive/distill", initial=0.4) == 0.4
    with pytest.raises(ValueError):
        adaptive_coefficient([1.0], [], alpha=1.0)
    # the method reads its own history: steps that did not distil (the first) do not count
    cila = CILA(alpha=2.0, ird=0.4)
    assert cila.coefficient() == 0.4
    cila.history = [{"step": 0, "contrastive": 9.0, "ird": None}, {"step": 1, "contrastive": 2.0, "ird": 0.5},
                    {"step": 2, "contrastive": 1.0, "ird": 1.0}]
    assert cila.coefficient() == pytest.approx(2.0 * 0.75 / 1.5)
    assert CILA(alpha=2.0, ird=0.4, adaptive=False).coefficient() == 0.4


def test_cila_run_uses_the_coefficient_of_its_recorded_history(tmp_path):
    assert run.main(["--methods", "cila", "--stream", "toy", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path),
                     "--no-figures", "--set", "cila.alpha=3"]) == 0
    hist = json.loads((tmp_path / "toy" / "runs" / "cila[alpha=3]" / "seed0.json").read_text())["method_state"]["history"]
    assert [h["step"] for h in hist] == [0, 1, 2] and hist[0]["coefficient"] is None
    assert hist[1]["coefficient"] == 1.0                                    # first distilling step: ``ird``
    assert hist[2]["coefficient"] == pytest.approx(3.0 * hist[1]["ird"] / hist[1]["contrastive"], rel=1e-6)
    assert hist[1]["ird"] > 0


# --- on real runs ---------------------------------------------------------------------------------------------
STRONG = {"der": {"alpha": 10.0}, "derpp": {"alpha": 10.0, "beta": 1.0},
          "co2l": {"ird": 10.0, "past_temp": 0.2}, "cila": {"ird": 10.0, "past_temp": 0.2}}


@pytest.fixture(scope="module")
def two_step_runs(tmp_path_factory):
    from conftest import TWO_STEP
    path = tmp_path_factory.mktemp("two") / "two-step.toml"
    path.write_text(TWO_STEP)
    spec = streams.load(str(path))
    # plain SGD, a moderate step (as tests/test_replay.py)
    train = TrainConfig(epochs=3, lr=0.1, weight_decay=0.0, optimizer="sgd")
    go = lambda m, p: run_method(spec, m, p, seed=0, train=train, loss=LossConfig(temperature=0.1))  # noqa: E731
    out = {"vanilla": go("vanilla", {})}
    for m, p in STRONG.items():
        out[m] = go(m, {})
        out[m + "+"] = go(m, p)
    return out


@pytest.mark.parametrize("method", list(STRONG))
def test_methods_move_old_alignment_scores_less_than_vanilla(two_step_runs, method):
    """Step 2 (text–audio) shares the text head with step 1 (text–video): distilling the stored step-1 pairs'
    embeddings (DER) or their relations (Co2L, CILA) keeps step-1 alignment scores closer to where step 1
    left them, while step 2 is still learned."""
    van = two_step_runs["vanilla"]["matrices"]["align_dev"][2][0]
    assert two_step_runs[method]["matrices"]["align_dev"][2][0] < van               # defaults
    strong = two_step_runs[method + "+"]["matrices"]
    assert strong["align_dev"][2][0] < 0.5 * van                                     # stronger settings
    assert strong["r10"][2][1] > strong["r10"][0][1]                                  # step 2 is still learned
    st = two_step_runs[method + "+"]["method_state"]
    assert st["buffer_per_task"] == {"0": 200, "1": 200}


@pytest.mark.parametrize("method", ["der", "derpp", "co2l", "cila"])
def test_cli_runs_each_method_on_toy(tmp_path, method):
    assert run.main(["--methods", method, "--stream", "toy", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path),
                     "--no-figures"]) == 0
    assert (tmp_path / "toy" / "runs" / method / "seed0.json").exists()
