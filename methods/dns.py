"""DNS — Dual-sided Null Space projection (Liu, Xia, Ng, Chua, "Continual Multimodal Contrastive Learning",
NeurIPS 2025, arXiv 2503.14963), as described in the paper."""
from __future__ import annotations

import torch

from bench.streams import MODALITY_ORDER

from . import register
from ._projection import BIAS, NUMERICS, PROJECT, THRESHOLDS, HeadProjection, ProjectionMethod, Projector


def step_gram(x: torch.Tensor) -> torch.Tensor:
    """[x; 1]ᵀ [x; 1] of a step's inputs (rows), in ``x``'s precision: the input covariance's update (its
    top-left block without a folded bias) and what the embeddings' covariance is computed from."""
    n, d = x.shape
    g = x.new_empty(d + 1, d + 1)
    torch.mm(x.T, x, out=g[:d, :d])
    g[:d, d] = g[d, :d] = x.sum(0)
    g[d, d] = n
    return g


def embedded_gram(lin, gram: torch.Tensor, x: torch.Tensor, free: bool, dtype) -> torch.Tensor:
    """zᵀ z of the step's embeddings z = x Wᵀ + b (``free``: without the bias, as the official code embeds
    them), in ``dtype``. As [W | b] G [W | b]ᵀ from the inputs' Gram G when that is cheaper than embedding the
    n rows (n·d·out + n·out² against out·d² + out²·d multiply-adds: at n = 2,000 and d = 1,024 half the work,
    and no n×out matrix), else directly."""
    n, d = x.shape
    out = lin.out_features
    if out * d * d + out * out * d < n * d * out + n * out * out:
        w = torch.cat([lin.weight, lin.bias.unsqueeze(1)], dim=1).to(dtype)
        if free:
            w, gram = w[:, :d], gram[:d, :d]
        return w @ gram @ w.T
    z = x @ lin.weight.T if free else lin(x)
    z = z.to(dtype)
    return z.T @ z


@register("dns")
class DNS(ProjectionMethod):
    """Dual-sided null-space projection (Liu et al. 2025): updates keep old alignment scores unchanged.

    For the step's pair (m1, m2), each head's update ΔW is replaced by ΔW − P̃ ΔW P, where P projects onto
    the principal subspace of the running uncentered covariance of all earlier *inputs* of that modality
    and P̃ onto that of the earlier *partner embeddings* it was aligned with; for an old input x, the new
    change ΔW x is orthogonal to every old partner embedding, so old scores do not move. No old data is
    kept: two covariance matrices per modality. The method is contrastive and pairwise by design; the
    choices below make the paper's description concrete:

    - ``lambda_min`` / ``left_lambda_min`` / ``threshold``: eigenvalues kept in P (input side) and P̃
      (output side): ``abs`` λ > λ_min (the paper; 0.01 for ImageBind, 1e-4 LanguageBind), ``rel``
      λ > λ_min·λ_max, ``energy`` the leading eigenvalues holding a fraction λ_min of the trace. The
      left threshold defaults to the right one (the paper thresholds both sides).
    - ``project``: ``update`` (default) projects the optimiser's actual parameter change after its step
      (exact with any optimiser; with Adam this is Adam-NSCL's choice); ``gradient`` projects the raw
      gradient before the optimiser, as the official code does (exact with plain SGD only).
    - ``bias``: ``fold`` (default) treats [W | b] as one map on [x; 1], so the bias is projected with W;
      ``freeze`` keeps the bias of a trained head fixed; ``free`` leaves it unprojected (official code).
    - ``numerics``: ``exact`` (default) computes each subspace from a float64 eigendecomposition and never
      keeps a numerical zero; ``float32`` thresholds the singular values of the float32 covariance as the
      official code does, so with a threshold of 0 round-off keeps every direction of a rank-deficient
      covariance (the output-side projector becomes the identity up to round-off, and with both sides full
      rank the round-off remainder of the gradient is what AdamW rescales).
    - ``accumulate``: the precision of the running covariances, ``float64`` (default) or ``float32`` (the
      official code's: its features are float32 and so is every covariance update; at d = 1024 the
      step-end update costs about half as much, at the price of round-off in the accumulated sums).
    - ``counts``: ``modality`` keeps one sample count per modality for the running covariances;
      ``global`` scales all of them by one counter across modalities (official code).
    - ``columns``: ``pair`` updates covariances from the pair's own features; ``first_two`` reads the
      source's first two modalities instead (the official code's mix-up on 3-modality sources: the source's
      declared modalities in the official order vision, text, audio, thermal, depth, …). Where those
      columns are not available (a bank without them) or do not fit the pair's heads (towers of different
      widths — impossible in the official code, which has one width), the step falls back to the pair's
      own columns and the run file lists it under ``method_state.columns_fallback``.
    """

    role = "proposed"
    defaults = dict(lambda_min=0.01, left_lambda_min=None, threshold="abs", project="update", bias="fold",
                    counts="modality", columns="pair", numerics="exact", accumulate="float64")
    search_space = dict(lambda_min=[1e-3, 1e-2, 1e-1])
    types = dict(left_lambda_min=float)
    choices = dict(threshold=THRESHOLDS, project=PROJECT, bias=BIAS,
                   counts=("modality", "global"), columns=("pair", "first_two"), numerics=NUMERICS,
                   accumulate=("float64", "float32"))

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.cov_in: dict[str, torch.Tensor] = {}     # modality -> (d_in [+1]) square, in `accumulate` precision
        self.cov_out: dict[str, torch.Tensor] = {}    # modality -> d_out square: its earlier partners' embeddings
        self.n_in: dict[str, int] = {}
        self.n_out: dict[str, int] = {}
        self.n_global = 0
        self.ranks: list[dict] = []
        self.columns_fallback: list[int] = []
        self.proj: dict[str, tuple[Projector, Projector]] = {}
        self.projection = HeadProjection(self.options.bias)

    def _removed(self, m: str):
        p_in, p_out = self.proj[m]
        return lambda delta: p_in.sandwich(p_out, delta)      # P̃ Δ P

    def _constrained(self, ctx) -> list[str]:
        """The step's heads with something to protect (a modality seen before); the others are free."""
        return [m for m in ctx.pair if not (self.proj[m][0].is_zero or self.proj[m][1].is_zero)]

    def _factors(self, m, dz, x):
        p_in, p_out = self.proj[m]
        return p_out.right(dz), p_in.right(x)                # P̃ Dᵀ X P = (D P̃)ᵀ (X P)

    def _costs(self, m, lin, batch):
        p_in, p_out = self.proj[m]
        # the dense sandwich Ũ (Ũᵀ G U) Uᵀ costs about half of projecting G from both sides separately
        dense = (p_in.flops(lin.out_features) + p_out.flops(self.projection.in_dim(lin))) // 2
        return dense, p_in.flops(batch) + p_out.flops(batch)

    # -- hooks ---------------------------------------------------------------------------------------
    def before_training_exp(self, ctx):
        self.proj = {}
        o = self.options
        left = o.lambda_min if o.left_lambda_min is None else o.left_lambda_min
        for m in ctx.pair:
            lin = ctx.heads[m]
            if m in self.cov_in:
                p_in = Projector.from_covariance(self.cov_in[m], o.threshold, o.lambda_min, numerics=o.numerics)
                p_out = Projector.from_covariance(self.cov_out[m], o.threshold, left, numerics=o.numerics)
            else:   # a modality never seen before: no constraint
                p_in, p_out = Projector.zero(self.projection.in_dim(lin)), Projector.zero(lin.out_features)
            self.proj[m] = (p_in, p_out)
            self.ranks.append({"step": ctx.step, "modality": m, "input_rank": p_in.rank, "input_dim": p_in.dim,
                               "output_rank": p_out.rank, "output_dim": p_out.dim})

    @torch.no_grad()
    def after_training_exp(self, ctx):
        a, b = ctx.pair
        xa, xb = ctx.train
        if self.options.columns == "first_two":
            f = ctx.source_features
            declared = getattr(f, "declared", ()) or tuple(f)
            first = [m for m in MODALITY_ORDER if m in declared][:2]
            if all(m in f for m in first) and (f[first[0]].shape[1], f[first[1]].shape[1]) == (xa.shape[1], xb.shape[1]):
                xa, xb = f[first[0]], f[first[1]]
            else:
                self.columns_fallback.append(ctx.step)
        n = len(xa)
        dtype = torch.float64 if self.options.accumulate == "float64" else torch.float32
        grams = {m: step_gram(x.to(dtype)) for m, x in ((a, xa), (b, xb))}
        fold, free = self.options.bias == "fold", self.options.bias == "free"
        updates = [(self.cov_in, self.n_in, a, grams[a] if fold else grams[a][:-1, :-1]),
                   (self.cov_in, self.n_in, b, grams[b] if fold else grams[b][:-1, :-1]),
                   (self.cov_out, self.n_out, a, embedded_gram(ctx.heads[b], grams[b], xb, free, dtype)),
                   (self.cov_out, self.n_out, b, embedded_gram(ctx.heads[a], grams[a], xa, free, dtype))]
        for covs, counts, m, gram in updates:
            old_n = self.n_global if self.options.counts == "global" else counts.get(m, 0)
            new_n = old_n + n
            prev = covs.get(m)
            cov = gram / new_n
            covs[m] = cov if prev is None else prev * (old_n / new_n) + cov
            counts[m] = counts.get(m, 0) + n
        self.n_global += n

    def state_summary(self):
        out = {"projector_ranks": self.ranks}
        if self.options.columns == "first_two":
            out["columns_fallback"] = self.columns_fallback
        return out
