from . import Method, register


@register("joint")
class Joint(Method):
    """Upper reference: at step t, trains on the union of the pairs of steps 1..t (it sees old data).

    The joint-training upper bound of continual-learning benchmarks (e.g. van de Ven, Tuytelaars & Tolias
    2022, "Three types of incremental learning"), here cumulative: not a continual-learning method (it breaks
    the no-old-data rule); it shows what one set of heads can fit jointly. Adaptation: batches are drawn per pair —
    each InfoNCE compares one modality pair only —
    and the batches of all seen pairs are interleaved; every head of a seen modality is trainable.
    """
    role = "upper-reference"
    family = "reference"
    sees_old_data = True

    def train_tasks(self, ctx):
        return list(range(ctx.step + 1))
