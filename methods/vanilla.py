from . import Method, register


@register("vanilla")
class Vanilla(Method):
    """Sequential fine-tuning: each step trains the pair's heads on its own data, nothing protects the past.

    The lower bound of every continual-learning table (the "Vanilla" row of Liu et al. 2025, CMCL).
    Adaptation: none needed — the step's InfoNCE loss on its modality pair is minimised with the run's
    optimiser.
    """
    role = "naive"
    family = "naive"
