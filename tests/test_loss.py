import math

import pytest
import torch

from bench.errors import BenchError
from bench.loss import OFFICIAL_LOSS, LossConfig, info_nce, pair_loss, reference_info_nce


def test_perfect_alignment_gives_low_loss_and_random_gives_log_n():
    z = torch.eye(8) * 10
    assert info_nce(z, z, LossConfig(temperature=1.0)).item() < 1e-3
    zero = torch.zeros(8, 4)
    assert info_nce(zero, zero, LossConfig()).item() == pytest.approx(math.log(8))


def test_direction_and_symmetry():
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    a2b = info_nce(za, zb, LossConfig(direction="a2b", temperature=0.5))
    b2a = info_nce(zb, za, LossConfig(direction="a2b", temperature=0.5))
    both = info_nce(za, zb, LossConfig(direction="both", temperature=0.5))
    assert both.item() == pytest.approx((a2b.item() + b2a.item()) / 2, rel=1e-6)
    assert a2b.item() != pytest.approx(b2a.item())


def test_normalize_makes_loss_scale_invariant():
    g = torch.Generator().manual_seed(1)
    za, zb = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    cfg = LossConfig(normalize=True, temperature=0.1)
    assert info_nce(za, zb, cfg).item() == pytest.approx(info_nce(3 * za, 0.5 * zb, cfg).item(), rel=1e-5)
    raw = LossConfig(normalize=False, temperature=0.1)
    assert info_nce(za, zb, raw).item() != pytest.approx(info_nce(3 * za, zb, raw).item())


def test_official_preset_and_validation():
    assert (OFFICIAL_LOSS.temperature, OFFICIAL_LOSS.direction, OFFICIAL_LOSS.normalize) == (1.0, "a2b", False)
    with pytest.raises(BenchError, match="direction"):
        LossConfig(direction="sideways")
    with pytest.raises(BenchError, match="temperature"):
        LossConfig(temperature=0)


SETTINGS = [LossConfig(temperature=t, direction=d, normalize=n)
            for t in (0.05, 1.0) for d in ("both", "a2b") for n in (True, False)]


@pytest.mark.parametrize("cfg", SETTINGS, ids=lambda c: f"{c.direction}-t{c.temperature}-{'norm' if c.normalize else 'raw'}")
def test_the_written_out_gradient_is_the_definitions(cfg):
    """info_nce's own backward against the finite differences (gradcheck, float64) and against autograd
    through the composition of torch's functions that defines it."""
    g = torch.Generator().manual_seed(2)
    za = torch.randn(7, 5, dtype=torch.double, generator=g, requires_grad=True)
    zb = torch.randn(7, 5, dtype=torch.double, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, cfg), (za, zb))
    ours = torch.autograd.grad(info_nce(za, zb, cfg) * 3, (za, zb))
    ref = torch.autograd.grad(reference_info_nce(za, zb, cfg) * 3, (za, zb))
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)
    assert info_nce(za, zb, cfg).item() == pytest.approx(reference_info_nce(za, zb, cfg).item(), rel=1e-12)


@pytest.mark.parametrize("cfg", SETTINGS[::3], ids=lambda c: f"{c.direction}-t{c.temperature}-{'norm' if c.normalize else 'raw'}")
def test_the_pair_node_carries_terms_on_the_embeddings_to_the_weights(cfg):
    """pair_loss (both heads and the loss as one node) against the heads' own forward and the definition,
    with a method's terms added on z_a and z_b (as LwF or a penalty on embeddings does)."""
    g = torch.Generator().manual_seed(3)
    la, lb = torch.nn.Linear(6, 5).double(), torch.nn.Linear(4, 5).double()
    xa, xb = torch.randn(9, 6, dtype=torch.double, generator=g), torch.randn(9, 4, dtype=torch.double, generator=g)
    params = [*la.parameters(), *lb.parameters()]
    loss, za, zb = pair_loss(la, lb, xa, xb, cfg)
    assert type(loss.grad_fn).__name__ == "_PairLossBackward"
    ours = torch.autograd.grad(2 * loss + 0.3 * (za ** 2).sum() + zb[:, 0].sum(), params)
    ra, rb = la(xa), lb(xb)
    ref = torch.autograd.grad(2 * reference_info_nce(ra, rb, cfg) + 0.3 * (ra ** 2).sum() + rb[:, 0].sum(), params)
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(za, ra)
    # only an embedding used, not the loss: the node gives that term's gradient alone
    only = torch.autograd.grad(pair_loss(la, lb, xa, xb, cfg)[1].sum(), params, allow_unused=True)
    torch.testing.assert_close(only[0], torch.autograd.grad(la(xa).sum(), la.weight)[0])
    assert float(only[2].abs().sum()) == 0


def test_other_heads_take_the_plain_path_and_graphs_differentiate_twice():
    cfg = LossConfig(temperature=0.1, normalize=True)
    g = torch.Generator().manual_seed(4)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 5))            # not a plain Linear head
    lb = torch.nn.Linear(4, 5)
    xa, xb = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    loss, za, zb = pair_loss(seq, lb, xa, xb, cfg)
    assert type(loss.grad_fn).__name__ == "_InfoNCEBackward"
    assert loss.item() == pytest.approx(reference_info_nce(seq(xa), lb(xb), cfg).item(), rel=1e-6)
    first = torch.autograd.grad(loss, lb.weight, retain_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(loss, lb.weight)[0], first)     # saved values left intact
