import math

import pytest
import torch

from bench.errors import BenchError
from bench.loss import OFFICIAL_LOSS, LossConfig, info_nce, reference_info_nce


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


def test_embeddings_see_the_whole_gradient_and_graphs_differentiate_twice():
    """A method's terms on the embeddings add to the loss's gradient; ``z.retain_grad()`` (DNS's batch
    factors read it) holds the whole gradient on z; a retained graph differentiates again."""
    cfg = LossConfig(temperature=0.1, normalize=True)
    g = torch.Generator().manual_seed(4)
    la, lb = torch.nn.Linear(4, 5).double(), torch.nn.Linear(3, 5).double()
    xa, xb = torch.randn(6, 4, generator=g).double(), torch.randn(6, 3, generator=g).double()
    za, zb = la(xa), lb(xb)
    za.retain_grad()
    loss = info_nce(za, zb, cfg)
    first = torch.autograd.grad(loss, lb.weight, retain_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(loss, lb.weight, retain_graph=True)[0], first)
    (loss + 0.3 * (za ** 2).sum()).backward()
    ra = la(xa).detach().requires_grad_()
    (reference_info_nce(ra, lb(xb), cfg) + 0.3 * (ra ** 2).sum()).backward()
    torch.testing.assert_close(za.grad, ra.grad)
