from . import register
from .dns import DNS


@register("dns-official")
class DNSOfficial(DNS):
    """DNS as the official code (github.com/Xiaohao-Liu/CMCL) runs it: one-sided, gradient projection.

    Same mechanism as ``dns`` (Liu et al. 2025) with the official code's choices as defaults (every
    difference is listed in docs/official-code.md): left threshold 0 (P̃ ≈ I, effectively ΔW = G (I − P)), λ_min 0.1,
    the covariance update reads the source's first two modality columns, one global sample counter, the
    raw gradient projected before the optimiser (AdamW then rescales it), bias unprojected, projectors from
    float32 singular values (so its threshold-0 output side keeps round-off directions), running covariances
    summed in float32 (``accumulate=float32``; ``dns`` keeps float64 sums). The official
    training loss (one-way InfoNCE, temperature 1, raw outputs) is a run-level choice:
    ``python -m bench.run --loss official``; ``--protocol official`` adds the Hugging Face Trainer's
    defaults (linear LR decay, gradient clipping at 1.0, no bias decay). Not reproduced: with its pinned transformers 4.30.2 the
    projection callback never runs and the official DNS trains as ``vanilla``.
    """

    role = "proposed"
    defaults = dict(DNS.defaults, lambda_min=0.1, left_lambda_min=0.0, project="gradient", bias="free",
                    counts="global", columns="first_two", numerics="float32", accumulate="float32")
    search_space = {}          # it reproduces the official code's settings; not tuned
