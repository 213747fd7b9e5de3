from . import Method, register


@register("frozen")
class Frozen(Method):
    """No training: the pre-bound encoders with identity heads (the zero-shot reference, row "S" of the paper).

    Row "S" of the tables of Liu et al. 2025 (CMCL). Every row of its metric matrices equals row 0; it bounds what
    training adds (plasticity) and shows that
    a method which forgets can end below the untrained model.
    """
    role = "lower-reference"
    family = "reference"

    def train_tasks(self, ctx):
        return []
