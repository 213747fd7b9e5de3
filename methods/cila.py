"""CILA (Wen et al., "Provable Contrastive Continual Learning", ICML 2024), adapted to contrastive modality pairs."""
from __future__ import annotations

from collections.abc import Sequence

from . import register
from .co2l import Co2L

RATIOS = ("distill/contrastive", "contrastive/distill")


def adaptive_coefficient(contrastive: Sequence[float], distillation: Sequence[float], alpha: float = 1.0,
                         ratio: str = "distill/contrastive", initial: float = 1.0) -> float:
    """CILA's adaptive distillation coefficient for the next step, from the loss history of earlier steps.

    ``contrastive[s]`` and ``distillation[s]`` are the mean (unweighted) contrastive and distillation losses
    over the iterations of an earlier step s that distilled (one entry per such step, in order). With
    ``ratio = "distill/contrastive"`` (default)::

        λ_t = α · mean_{s<t} L_distill(s) / mean_{s<t} L_contrastive(s)

    and with ``"contrastive/distill"`` the inverse ratio of the same means. The ratio of averages is CILA's
    rule as its abstract words it ("the ratio between average distillation losses and average contrastive
    losses from previous tasks", checked); the option inverts it for experiments. Empty history (the first step
    that distils) or a non-positive
    denominator: ``initial``."""
    if ratio not in RATIOS:
        raise ValueError(f"ratio must be one of {RATIOS}, got {ratio!r}")
    if len(contrastive) != len(distillation):
        raise ValueError("contrastive and distillation histories must have one entry per step each")
    if not contrastive:
        return float(initial)
    c = sum(contrastive) / len(contrastive)
    d = sum(distillation) / len(distillation)
    num, den = (d, c) if ratio == "distill/contrastive" else (c, d)
    if not den > 0:
        return float(initial)
    return float(alpha) * num / den


@register("cila")
class CILA(Co2L):
    """CILA: Co2L with an adaptive distillation coefficient per step, set from earlier steps' loss ratio.

    Yichen Wen, Zhiquan Tan, Kaipeng Zheng, Chuanlong Xie, Weiran Huang, "Provable Contrastive Continual
    Learning", ICML 2024. CILA bounds the final model's loss on old tasks by the training losses of the contrastive
    continual-learning framework (Co2L's asymmetric contrastive loss plus instance-wise relation
    distillation) and, following the bound, replaces Co2L's fixed distillation weight by a per-task
    coefficient computed from the average distillation and contrastive losses recorded on previous tasks
    (``adaptive_coefficient``: ``λ_t = α · mean L_distill / mean L_contrastive`` over the earlier steps
    that distilled; ``ratio`` inverts it). Adaptation to contrastive modality pairs: everything else is
    ``co2l``'s (see there: InfoNCE over the pair as the two views, same-pair buffered pairs as extra
    negatives only, IRD on the current batch and on each replayed pair group, never mixing pairs); the
    history holds, per step, the mean over its iterations of the current batch's (asymmetric) InfoNCE and of
    the IRD (the KL form: the same gradients as Co2L's cross-entropy form, without the target's entropy,
    which would otherwise enter the ratio). λ is fixed for a whole step, computed when it starts; the first
    step that distils (the second) uses ``ird``. ``adaptive = false`` keeps λ = ``ird`` throughout (Co2L).
    ``alpha`` (CILA's α) scales the ratio (what the rule gives on sim-paper: docs/results.md). Other options
    and defaults as ``co2l``.
    """

    defaults = dict(Co2L.defaults, alpha=1.0, adaptive=True, ratio="distill/contrastive")
    search_space = dict(alpha=[0.1, 0.3, 1.0, 3.0])
    choices = dict(Co2L.choices, ratio=RATIOS)

    def coefficient(self) -> float:
        if not self.options.adaptive:
            return float(self.options.ird)
        done = [h for h in self.history if h["ird"] is not None]
        return adaptive_coefficient([h["contrastive"] for h in done], [h["ird"] for h in done], self.options.alpha,
                                    self.options.ratio, initial=self.options.ird)
