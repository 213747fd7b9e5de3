from . import Method, register


@register("l2")
class L2Anchor(Method):
    """L2 anchor: penalise how far the heads move from where the previous step left them.

    The "L2" baseline of Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS
    2017 (EWC with the Fisher replaced by the identity). Adaptation to modality pairs: the penalty
    ``strength/2 · Σ ||θ − θ*||²`` runs over the parameters of the two heads the current step trains,
    anchored at their values when the step that last trained them ended; a modality seen for the first
    time is free. No old data is kept: one copy of each trained head.
    """
    family = "regularisation"

    defaults = {"strength": 1.0}
    search_space = {"strength": [0.01, 0.1, 1.0, 10.0]}

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.anchor = {}    # modality -> parameters of its head when it was last trained

    def penalty(self, ctx):
        total = 0.0
        for m in ctx.pair:
            for p, p_old in zip(ctx.heads[m].parameters(), self.anchor.get(m, ())):
                total = total + (p - p_old).pow(2).sum()
        return 0.5 * self.options.strength * total

    def before_backward(self, ctx):
        ctx.loss = ctx.loss + self.penalty(ctx)

    def after_training_exp(self, ctx):
        for m in ctx.pair:
            self.anchor[m] = [p.detach().clone() for p in ctx.heads[m].parameters()]
