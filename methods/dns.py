"""DNS — Dual-sided Null Space projection (Liu, Xia, Ng, Chua, "Continual Multimodal Contrastive Learning",
NeurIPS 2025, arXiv 2503.14963), as described in the paper."""
from __future__ import annotations

import torch

from bench.streams import MODALITY_ORDER

from . import Method, register
from ._projection import THRESHOLDS, Projector


@register("dns")
class DNS(Method):
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
    - ``counts``: ``modality`` keeps one sample count per modality for the running covariances;
      ``global`` scales all of them by one counter across modalities (official code).
    - ``columns``: ``pair`` updates covariances from the pair's own features; ``first_two`` reads the
      source's first two modalities instead (the official code's mix-up on 3-modality sources). Where those
      columns do not fit the pair's heads (towers of different widths — impossible in the official code,
      which has one width), the step falls back to the pair's own columns and the run file lists it under
      ``method_state.columns_fallback``.
    """

    role = "proposed"
    defaults = dict(lambda_min=0.01, left_lambda_min=None, threshold="abs", project="update", bias="fold",
                    counts="modality", columns="pair")
    types = dict(left_lambda_min=float)
    choices = dict(threshold=THRESHOLDS, project=("update", "gradient"), bias=("fold", "freeze", "free"),
                   counts=("modality", "global"), columns=("pair", "first_two"))

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.cov_in: dict[str, torch.Tensor] = {}     # modality -> (d_in [+1]) square, float64
        self.cov_out: dict[str, torch.Tensor] = {}    # modality -> d_out square: its earlier partners' embeddings
        self.n_in: dict[str, int] = {}
        self.n_out: dict[str, int] = {}
        self.n_global = 0
        self.ranks: list[dict] = []
        self.columns_fallback: list[int] = []
        self.proj: dict[str, tuple[Projector, Projector]] = {}
        self._old: dict[str, torch.Tensor] = {}      # [W | b] before the optimiser step, per head
        self._delta: dict[str, torch.Tensor] = {}

    # -- helpers -------------------------------------------------------------------------------------
    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.new_ones(len(x), 1)], dim=1) if self.options.bias == "fold" else x

    def _joint(self, lin, attr: str) -> torch.Tensor:
        """[W | b] (fold) or W, as one matrix, of the weights (attr='data') or gradients (attr='grad')."""
        w = getattr(lin.weight, attr)
        if self.options.bias != "fold":
            return w
        return torch.cat([w, getattr(lin.bias, attr).unsqueeze(1)], dim=1)

    def _removed(self, m: str, mat: torch.Tensor) -> torch.Tensor:
        p_in, p_out = self.proj[m]
        return p_in.sandwich(p_out, mat)

    # -- hooks ---------------------------------------------------------------------------------------
    def before_training_exp(self, ctx):
        self.proj = {}
        left = self.options.lambda_min if self.options.left_lambda_min is None else self.options.left_lambda_min
        for m in ctx.pair:
            lin = ctx.heads[m]
            d_in = lin.in_features + (1 if self.options.bias == "fold" else 0)
            if m in self.cov_in:
                p_in = Projector.from_covariance(self.cov_in[m], self.options.threshold, self.options.lambda_min)
                p_out = Projector.from_covariance(self.cov_out[m], self.options.threshold, left)
            else:   # a modality never seen before: no constraint
                p_in, p_out = Projector.zero(d_in), Projector.zero(lin.out_features)
            self.proj[m] = (p_in, p_out)
            self.ranks.append({"step": ctx.step, "modality": m, "input_rank": p_in.rank, "input_dim": p_in.dim,
                               "output_rank": p_out.rank, "output_dim": p_out.dim})

    def after_backward(self, ctx):
        if self.options.project != "gradient":
            return
        for m in ctx.pair:
            lin = ctx.heads[m]
            if lin.weight.grad is None:
                continue
            removed = self._removed(m, self._joint(lin, "grad"))
            d = lin.in_features
            lin.weight.grad.sub_(removed[:, :d])
            if self.options.bias == "fold":
                lin.bias.grad.sub_(removed[:, d])
            elif self.options.bias == "freeze":
                lin.bias.grad = None

    def _constrained(self, m: str) -> bool:
        p_in, p_out = self.proj[m]
        return not (p_in.is_zero or p_out.is_zero)

    def before_update(self, ctx):
        for m in ctx.pair:
            if self.options.bias != "freeze" and not (self.options.project == "update" and self._constrained(m)):
                continue
            lin = ctx.heads[m]
            d = lin.in_features
            buf = self._old.get(m)
            if buf is None or buf.shape != (lin.out_features, d + 1):
                buf = self._old[m] = lin.weight.data.new_empty(lin.out_features, d + 1)
                self._delta[m] = lin.weight.data.new_empty(lin.out_features, d + (1 if self.options.bias == "fold" else 0))
            buf[:, :d].copy_(lin.weight.data)       # [W | b] before the step, in a reused buffer
            buf[:, d].copy_(lin.bias.data)

    @torch.no_grad()
    def after_update(self, ctx):
        for m in ctx.pair:
            lin, old = ctx.heads[m], self._old.get(m)
            if old is None:
                continue
            d = lin.in_features
            if self.options.bias == "freeze":
                lin.bias.data.copy_(old[:, d])
            if self.options.project != "update" or not self._constrained(m):
                continue
            delta = self._delta[m]                  # the optimiser's change of [W | b] (or W)
            delta[:, :d].copy_(lin.weight.data).sub_(old[:, :d])
            if self.options.bias == "fold":
                delta[:, d].copy_(lin.bias.data).sub_(old[:, d])
            removed = self._removed(m, delta)
            lin.weight.data.sub_(removed[:, :d])
            if self.options.bias == "fold":
                lin.bias.data.sub_(removed[:, d])

    @torch.no_grad()
    def after_training_exp(self, ctx):
        a, b = ctx.pair
        xa, xb = ctx.train
        if self.options.columns == "first_two":
            f = ctx.source_features
            first = [m for m in MODALITY_ORDER if m in f][:2]
            if (f[first[0]].shape[1], f[first[1]].shape[1]) == (xa.shape[1], xb.shape[1]):
                xa, xb = f[first[0]], f[first[1]]
            else:
                self.columns_fallback.append(ctx.step)
        n = len(xa)

        def embed(m, x):
            lin = ctx.heads[m]
            return x @ lin.weight.T if self.options.bias == "free" else lin(x)

        updates = [(self.cov_in, self.n_in, a, self._augment(xa)), (self.cov_in, self.n_in, b, self._augment(xb)),
                   (self.cov_out, self.n_out, a, embed(b, xb)), (self.cov_out, self.n_out, b, embed(a, xa))]
        for covs, counts, m, x in updates:
            x = x.double()
            old_n = self.n_global if self.options.counts == "global" else counts.get(m, 0)
            new_n = old_n + n
            prev = covs.get(m)
            cov = x.T @ x / new_n
            covs[m] = cov if prev is None else prev * (old_n / new_n) + cov
            counts[m] = counts.get(m, 0) + n
        self.n_global += n

    def state_summary(self):
        out = {"projector_ranks": self.ranks}
        if self.options.columns == "first_two":
            out["columns_fallback"] = self.columns_fallback
        return out
