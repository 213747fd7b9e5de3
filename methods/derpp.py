"""DER++ (Buzzega et al., NeurIPS 2020), adapted to contrastive modality pairs."""
from __future__ import annotations

from . import register
from .der import DER


@register("derpp")
class DERpp(DER):
    """DER++: DER's distillation of stored embeddings plus the replayed InfoNCE of buffered pairs.

    Buzzega, Boschini, Porrello, Abati & Calderara, "Dark Experience for General Continual Learning: a Strong,
    Simple Baseline", NeurIPS 2020. DER++ adds to DER's ``α · ||h_θ(x') − z'||²`` the loss on the stored
    labels, ``β · CE(y'', f_θ(x''))``, on a second minibatch drawn independently from the same buffer.
    Adaptation to contrastive modality pairs: a pair's "label" is its partner, so the second term is the
    InfoNCE of the buffered pairs, computed within each modality-pair group (never across pairs; groups of
    one pair are dropped: no negative) and averaged weighted by group size, as ``er`` does; the first term is
    ``der``'s (see there: embeddings stored at the end of the pair's step, squared distance). Loss =
    InfoNCE + ``alpha`` · distance(draw 1) + ``beta`` · InfoNCE(draw 2). ``same_batch = false`` (default)
    draws the two minibatches independently, as the paper; ``true`` uses one draw for both (cheaper, and then
    the loss is exactly DER's plus ``beta`` times the replayed InfoNCE of DER's own groups). Defaults
    ``alpha = 3`` (``der``'s), ``beta = 0.5`` (a value the paper often picked; sweep: docs/results.md). Other
    options as in ``der``; ``beta = 0`` is ``der``.
    """

    defaults = dict(DER.defaults, alpha=3.0, beta=0.5, same_batch=False)
    search_space = dict(alpha=[1.0, 3.0], beta=[0.5, 1.0])
    choices = dict(DER.choices)
    term_names = ("embedding_distance", "replay_infonce")

    def replay_terms(self, ctx) -> list:
        first = self.draw()
        second = first if self.options.same_batch else self.draw(min_group=2)
        if not first and not second:
            return []
        mse = self.logit_term(ctx.heads, first) if first else 0.0
        nce = self.replay_infonce(ctx.heads, second, ctx.loss_cfg) if second else 0.0
        return [mse, nce]

    def weights(self) -> tuple[float, ...]:
        return (float(self.options.alpha), float(self.options.beta))
