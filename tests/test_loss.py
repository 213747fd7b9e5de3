import math

import pytest
import torch

from bench.errors import BenchError
from bench.loss import OFFICIAL_LOSS, LossConfig, info_nce


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
