"""DNS: projector algebra, the update rule, and the paper's stability claim measured on a real run."""
import pytest
import torch
from conftest import run_method

from bench import streams
from bench.heads import Heads
from bench.loss import LossConfig
from bench.trainer import TrainConfig
from methods._projection import Projector, principal_mask
from methods.dns import DNS


def _cov(d=10, rank=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, d, generator=g, dtype=torch.float64)
    return x.T @ x / 200


@pytest.mark.parametrize("rank", [0, 2, 4, 8, 10])
def test_projector_matches_dense_formula(rank):
    cov = _cov(rank=rank) if rank else torch.zeros(10, 10, dtype=torch.float64)
    p = Projector.from_covariance(cov, "abs", 1e-8)
    assert p.rank == rank
    dense = p.dense()
    g = torch.Generator().manual_seed(5)
    m = torch.randn(7, 10, generator=g)
    assert torch.allclose(p.right(m), m @ dense, atol=1e-5)
    assert torch.allclose(p.left(m.T), dense @ m.T, atol=1e-5)
    assert torch.allclose(dense @ dense, dense, atol=1e-5)          # a projector
    left = Projector.from_covariance(_cov(d=7, rank=3, seed=2), "abs", 1e-8)
    assert torch.allclose(p.sandwich(left, m), left.dense() @ m @ dense, atol=1e-5)


def test_thresholds():
    ev = torch.tensor([5.0, 1.0, 0.5, 0.01, 0.0])
    assert principal_mask(ev, "abs", 0.1).tolist() == [True, True, True, False, False]
    assert principal_mask(ev, "rel", 0.15).tolist() == [True, True, False, False, False]
    # energy: leading eigenvalues until 90% of the trace (5/6.51 = 77% < 90% -> take the 1.0 too)
    assert principal_mask(ev, "energy", 0.9).tolist() == [True, True, False, False, False]
    assert principal_mask(ev, "abs", 0.0).tolist() == [True, True, True, True, False]


def _heads_and_dns(**params):
    torch.manual_seed(0)
    heads = Heads({"text": 6, "video": 6}, 6)
    dns = DNS(**params)
    x_text = torch.randn(50, 3) @ torch.randn(3, 6)      # old inputs span 3 of 6 directions
    x_video = torch.randn(50, 6)
    dns.cov_in["text"] = dns.projection.augment(x_text).double().T @ dns.projection.augment(x_text).double() / 50
    z = heads["video"](x_video).detach()[:, :6]
    z[:, 4:] = 0                                          # old partner embeddings span 4 of 6 output directions
    dns.cov_out["text"] = z.double().T @ z.double() / 50
    return heads, dns, x_text, z


def test_projected_update_keeps_old_scores_exactly():
    heads, dns, x_old, partner = _heads_and_dns(lambda_min=1e-6)
    ctx = type("C", (), {})()
    ctx.pair, ctx.heads, ctx.step = ("text",), heads, 1
    dns.before_training_exp(ctx)
    lin = heads["text"]
    before = (lin(x_old) @ partner.T).detach()
    dns.before_update(ctx)
    with torch.no_grad():                                 # any update, e.g. what Adam proposes
        lin.weight.add_(torch.randn_like(lin.weight))
        lin.bias.add_(torch.randn_like(lin.bias))
    moved = (lin(x_old) @ partner.T).detach()
    assert (moved - before).abs().max() > 0.1
    dns.after_update(ctx)
    after = (lin(x_old) @ partner.T).detach()
    assert torch.allclose(after, before, atol=1e-4)       # old alignment scores unchanged (bias folded)
    assert (lin.weight.detach() - torch.eye(6)).abs().max() > 0.1    # yet the head did move (plasticity)


def test_projected_gradient_keeps_descent_direction():
    heads, dns, _, _ = _heads_and_dns(lambda_min=1e-6, project="gradient")
    ctx = type("C", (), {})()
    ctx.pair, ctx.heads, ctx.step = ("text",), heads, 1
    dns.before_training_exp(ctx)
    lin = heads["text"]
    g = torch.Generator().manual_seed(3)
    lin.weight.grad, lin.bias.grad = torch.randn(6, 6, generator=g), torch.randn(6, generator=g)
    raw = torch.cat([lin.weight.grad, lin.bias.grad[:, None]], 1).clone()
    dns.after_backward(ctx)
    proj = torch.cat([lin.weight.grad, lin.bias.grad[:, None]], 1)
    # G − P̃GP is an orthogonal projection of G: <G, ΔW> = ||ΔW||² > 0 (the loss still decreases)
    assert torch.dot(raw.flatten(), proj.flatten()).item() == pytest.approx(proj.norm().item() ** 2, rel=1e-4)
    assert 0 < proj.norm() < raw.norm()


def test_official_variant_is_one_sided():
    """With the left threshold at 0 the output-side projector is (numerically) the identity: ΔW = G (I − P)."""
    heads, dns, _, _ = _heads_and_dns(lambda_min=1e-6, left_lambda_min=0.0)
    dns.cov_out["text"] = dns.cov_out["text"] + 1e-9 * torch.eye(6, dtype=torch.float64)   # full rank, tiny tail
    ctx = type("C", (), {})()
    ctx.pair, ctx.heads, ctx.step = ("text",), heads, 1
    dns.before_training_exp(ctx)
    assert dns.proj["text"][1].rank == 6
    paper = DNS(lambda_min=1e-6)
    paper.cov_in, paper.cov_out = dns.cov_in, dns.cov_out
    paper.before_training_exp(ctx)
    assert paper.proj["text"][1].rank == 4                 # both sides thresholded: P̃ spans the 4 old directions


def _run(spec, method, **params):
    train = TrainConfig(epochs=3, lr=0.5, weight_decay=0.0, optimizer="sgd")
    return run_method(spec, method, params, seed=0, train=train, loss=LossConfig(temperature=0.1))


def test_dns_keeps_step1_alignment_scores_while_vanilla_moves_them(two_step):
    """The issue's acceptance check: step 2 shares text with step 1 and leaves the video head alone; with
    plain SGD, no weight decay and a small threshold, DNS keeps step-1 scores, Vanilla does not."""
    spec = streams.load(str(two_step))
    dns = _run(spec, "dns", lambda_min=1e-6)
    van = _run(spec, "vanilla")
    assert dns["matrices"]["align_dev"][2][0] < 1e-3
    assert van["matrices"]["align_dev"][2][0] > 1e-2
    # and DNS still learns step 2 (plasticity): its recall rises over the zero-shot value
    assert dns["matrices"]["r10"][2][1] > dns["matrices"]["r10"][0][1]
    text = [r for r in dns["method_state"]["projector_ranks"] if r["step"] == 1 and r["modality"] == "text"][0]
    assert 0 < text["input_rank"] < text["input_dim"] and 0 < text["output_rank"] < text["output_dim"]


def test_dns_with_adam_projects_the_update(two_step):
    """The default (update projection) stays stable under AdamW; projecting the raw gradient (the official
    code's choice) does not, because Adam rescales the projected gradient per coordinate."""
    spec = streams.load(str(two_step))
    train = TrainConfig(epochs=3, lr=1e-2, weight_decay=0.0)
    upd = run_method(spec, "dns", {"lambda_min": 1e-6}, 0, train, LossConfig(temperature=0.1))
    grad = run_method(spec, "dns", {"lambda_min": 1e-6, "project": "gradient"}, 0, train,
                          LossConfig(temperature=0.1))
    assert upd["matrices"]["align_dev"][2][0] < 1e-3
    assert grad["matrices"]["align_dev"][2][0] > 10 * upd["matrices"]["align_dev"][2][0]


def _three_modality_bank_stream(tmp_path, declared=("vision", "text", "depth")):
    from bench.features import bank
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 40), ("test", 16)):
        data = bank.SplitFeatures(features={m: torch.randn(n, 6, generator=g) for m in declared},
                                  ids=[f"{split}{i}" for i in range(n)])
        bank.write_split(bank.bank_file(tmp_path / "banks", "enc", "nyu", split), data, source="nyu", split=split,
                         encoder="enc")
    path = tmp_path / "nyu.toml"
    path.write_text('name = "nyu"\n[sources.nyu]\nkind = "bank"\nmodalities = ["vision", "text", "depth"]\n'
                    '[[steps]]\nsource = "nyu"\npair = ["vision", "depth"]\nmetrics = ["recall"]\n')
    return path


@pytest.mark.parametrize("columns,depth_from", [("pair", "depth"), ("first_two", "text")])
def test_first_two_columns_read_the_sources_declared_order_from_banks(tmp_path, columns, depth_from):
    """NYUDv2 is (vision, text, depth): the official covariance update of a vision–depth step reads the vision
    and *text* columns, so the bank's text column must be loaded though no step trains text."""
    from bench.features.bank import read_split
    from bench.runner import get_scenario
    from bench.trainer import Trainer
    spec = streams.load(str(_three_modality_bank_stream(tmp_path)))
    scenario = get_scenario(spec, "enc", tmp_path / "banks")
    heads = Heads(scenario.in_dims, 6)
    m = DNS(columns=columns, bias="free")
    Trainer(scenario, m, heads, TrainConfig(epochs=1), LossConfig(), seed=0).train_experience(0)
    x = read_split(tmp_path / "banks" / "enc" / "nyu" / "train.h5").features[depth_from].double()
    assert torch.allclose(m.cov_in["depth"], x.T @ x / len(x))
    assert m.state_summary().get("columns_fallback", []) == []


def test_first_two_columns_missing_from_the_bank_are_recorded(tmp_path):
    from bench.runner import get_scenario
    from bench.trainer import Trainer
    spec = streams.load(str(_three_modality_bank_stream(tmp_path, declared=("vision", "depth"))))
    scenario = get_scenario(spec, "enc", tmp_path / "banks")
    m = DNS(columns="first_two")
    Trainer(scenario, m, Heads(scenario.in_dims, 6), TrainConfig(epochs=1), LossConfig(), seed=0).train_experience(0)
    assert m.state_summary()["columns_fallback"] == [0]


def test_float32_numerics_keep_round_off_directions_as_the_official_code():
    cov = _cov(d=16, rank=5, seed=3)
    exact = Projector.from_covariance(cov, "abs", 0.0)
    official = Projector.from_covariance(cov, "abs", 0.0, numerics="float32")
    singular = torch.linalg.svdvals(cov.float())
    assert exact.rank == 5
    assert official.rank == int((singular > 0).sum()) > 5          # round-off singular values pass λ = 0
    # float32's round-off (~1e-7 of the largest), not float64's (~1e-16): it also passes a tiny threshold
    tiny = Projector.from_covariance(cov, "abs", 1e-9, numerics="float32")
    assert tiny.rank == int((singular > 1e-9).sum()) > 5
    # above the round-off, both agree on the rank of a clear threshold
    assert Projector.from_covariance(cov, "abs", 1e-3, numerics="float32").rank == 5
    # a full-rank float32 projector is the identity only up to round-off: P M P − M is tiny but not zero
    full = Projector.from_covariance(torch.eye(8, dtype=torch.float64) + _cov(d=8, rank=8), "abs", 0.0,
                                     numerics="float32")
    m = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    rest = m - full.sandwich(full, m)
    assert full.rank == 8 and 0 < rest.abs().max() < 1e-5
    assert (m - Projector.from_covariance(torch.eye(8, dtype=torch.float64), "abs", 0.0).sandwich(
        Projector.from_covariance(torch.eye(8, dtype=torch.float64), "abs", 0.0), m)).abs().max() == 0


@pytest.mark.parametrize("counts", ["modality", "global"])
def test_running_covariances_are_sample_weighted_means(two_step, counts):
    """Text is trained at both steps (200 pairs each): its input covariance is (X₁ᵀX₁ + X₂ᵀX₂) / 400; with the
    official global counter every modality's covariance is rescaled by the pairs of all steps instead."""
    from bench.runner import get_scenario
    from bench.trainer import Trainer
    scenario = get_scenario(streams.load(str(two_step)))
    m = DNS(bias="free", counts=counts)
    tr = Trainer(scenario, m, Heads(scenario.in_dims, 24), TrainConfig(epochs=1), LossConfig(), seed=0)
    tr.train_experience(0)
    tr.train_experience(1)
    (t1, v1), (t2, a2) = (tuple(x.double() for x in tr.train_data(j)) for j in (0, 1))
    assert torch.allclose(m.cov_in["text"], (t1.T @ t1 + t2.T @ t2) / 400)
    # video was seen at step 1 only: its own count (200), or the global one (400) after step 2 rescaled it
    if counts == "modality":
        assert torch.allclose(m.cov_in["video"], v1.T @ v1 / 200)
        assert torch.allclose(m.cov_in["audio"], a2.T @ a2 / 200)
    else:
        assert torch.allclose(m.cov_in["video"], v1.T @ v1 / 200)          # not touched by step 2
        assert torch.allclose(m.cov_in["audio"], a2.T @ a2 / 400)          # first seen when the counter was 200


@pytest.mark.parametrize("accumulate,dtype", [("float64", torch.float64), ("float32", torch.float32)])
def test_covariances_accumulate_in_the_chosen_precision(two_step, accumulate, dtype):
    """``accumulate = float32`` is the official code's precision: the covariance is the float32 product itself
    (bit for bit), and the float64 default differs from it by round-off."""
    from bench.runner import get_scenario
    from bench.trainer import Trainer
    scenario = get_scenario(streams.load(str(two_step)))
    m = DNS(bias="free", accumulate=accumulate)
    tr = Trainer(scenario, m, Heads(scenario.in_dims, 24), TrainConfig(epochs=1), LossConfig(), seed=0)
    tr.train_experience(0)
    t1, _ = tr.train_data(0)
    cov = m.cov_in["text"]
    assert cov.dtype == dtype and m.cov_out["text"].dtype == dtype
    x = t1.to(dtype)
    assert torch.equal(cov, x.T @ x / len(x))
    if accumulate == "float32":
        exact = t1.double().T @ t1.double() / len(t1)
        assert not torch.equal(cov.double(), exact) and torch.allclose(cov.double(), exact, rtol=1e-5, atol=1e-6)


def test_official_variant_sums_covariances_in_float32(two_step):
    """``dns-official`` keeps the official code's float32 covariance sums; ``dns`` keeps float64."""
    from bench.runner import get_scenario
    from bench.trainer import Trainer
    from methods.dns_official import DNSOfficial
    scenario = get_scenario(streams.load(str(two_step)))
    for m, dtype in ((DNSOfficial(), torch.float32), (DNS(), torch.float64)):
        tr = Trainer(scenario, m, Heads(scenario.in_dims, 24), TrainConfig(epochs=1), LossConfig(), seed=0)
        tr.train_experience(0)
        assert {c.dtype for c in (*m.cov_in.values(), *m.cov_out.values())} == {dtype}


@pytest.mark.parametrize("free", [False, True], ids=["with-bias", "free-bias"])
@pytest.mark.parametrize("rows", [40, 2], ids=["via-gram", "direct"])
def test_embedding_covariance_from_the_inputs_gram_is_the_embeddings_own(free, rows):
    """DNS's output-side covariance update: [W | b] G [W | b]ᵀ from the inputs' Gram G (cheaper for many
    rows) or zᵀ z of the embedded rows (few rows) is zᵀ z of z = x Wᵀ + b (without b for bias = free)."""
    from methods.dns import embedded_gram, step_gram
    g = torch.Generator().manual_seed(5)
    lin = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        lin.bias.copy_(torch.randn(4, generator=g, dtype=torch.float64))
    x = torch.randn(rows, 6, generator=g, dtype=torch.float64)
    gram = step_gram(x)
    ones = torch.cat([x, torch.ones(rows, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(gram, ones.T @ ones)
    with torch.no_grad():
        z = x @ lin.weight.T if free else lin(x)
        torch.testing.assert_close(embedded_gram(lin, gram, x, free, torch.float64), z.T @ z)
