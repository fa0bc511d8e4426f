"""Fast TopK / BatchTopK training for SAELens: dense encoder forward, everything else sparse.

``SparseTopKTrainingSAE`` ("sparse_topk") and ``SparseBatchTopKTrainingSAE``
("sparse_batchtopk") are SAELens ``TrainingSAE``s that compute the same loss as SAELens'
``TopKTrainingSAE`` / ``BatchTopKTrainingSAE`` (MSE + AuxK, ``rescale_acts_by_decoder_norm``,
``apply_b_dec_to_input``, input normalisation) with the same gradients, but only the encoder
matmul ``x @ W_enc`` is dense: selection runs on the no-grad pre-activations, the selected
values get their encoder gradient through :func:`selected_preacts`, and decoding /
decoder gradients go through :func:`sparse_decode`. Weights, initialisation, saving
(``save_inference_model`` -> plain SAELens "topk" / "jumprelu") and inference ``encode`` /
``decode`` are inherited unchanged.

SAELens' contract holds by default: ``feature_acts`` in the training output is dense unless the
config's ``use_sparse_activations`` is set (then a coalesced sparse COO tensor), and the returned
``hidden_pre`` is a tensor of its own. :func:`use_fast_bookkeeping` (what ``train.train_sae`` and
the ladder call) opts one SAE instance into the fast path's two differences: COO ``feature_acts``
whatever the config says (SAETrainer's firing bookkeeping is cheapest on it) and ``hidden_pre``
written into a ``[B, F]`` buffer reused by the next step. The opt-in lives on the instance, not in
the config, so a saved SAE and its inference export are SAELens' own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.sae import SAEConfig, TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from typing_extensions import override

from sae_studies.saes.dense_encoder import encoder_preacts, exact_preacts
from sae_studies.saes.registry import Recipe, register
from sae_studies.saes.sparse_decode import (
    SparsePattern,
    row_norms,
    selected_preacts,
    sparse_decode,
)

__all__ = [
    "FastTopKMixin",
    "SparseTopKTrainingSAEConfig",
    "SparseTopKTrainingSAE",
    "SparseBatchTopKTrainingSAEConfig",
    "SparseBatchTopKTrainingSAE",
    "batch_topk_select",
    "use_fast_bookkeeping",
]


def batch_topk_select(acts: torch.Tensor, n_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``n_keep`` entries of the flattened ``[B, F]`` matrix ``acts``: ``(values, flat_idx)``.

    Same result as ``acts.flatten().topk(n_keep)`` (up to the order of ties), but first takes
    each row's top ``min(F, 4 n_keep / B)`` as candidates, which is exact whenever no row holds
    more of the global top than its candidates (checked; else it falls back to the full topk).
    A flat topk over 67M entries takes ~1 s on two cores, the two-stage one ~0.2 s.
    """
    B, F = acts.shape
    per_row = min(F, max(1, -(-4 * n_keep // B)))
    if per_row >= F or per_row * B < n_keep:
        v, i = acts.flatten().topk(n_keep, sorted=False)
        return v, i
    cv, ci = acts.topk(per_row, dim=-1, sorted=True)
    v, j = cv.flatten().topk(n_keep, sorted=False)
    threshold = v.min()
    if bool((cv[:, -1] > threshold).any()):  # some row may hold more winners than candidates
        v, i = acts.flatten().topk(n_keep, sorted=False)
        return v, i
    rows = j // per_row
    flat = rows * F + ci.flatten()[j]
    return v, flat


def _lead_shape(x: torch.Tensor, n_rows: int) -> tuple[int, ...]:
    """The leading dimensions of ``x`` that hold the ``n_rows`` rows the step flattened them into
    (``x.shape[:-1]``, or ``x.shape[:-2]`` for a ``hook_z`` input of ``[..., heads, d_head]``)."""
    for end in range(x.ndim - 1, -1, -1):
        if math.prod(x.shape[:end]) == n_rows:
            return tuple(x.shape[:end])
    raise ValueError(f"input of shape {tuple(x.shape)} does not hold {n_rows} rows")


class FastTopKMixin:
    """The sparse training forward shared by the fast TopK-family classes.

    Subclasses provide ``_select(hidden_pre) -> (values, pattern)`` (values are the selected
    entries of ``hidden_pre``, which is already rescaled by the decoder norms when the config
    asks for it) and may override ``_reconstruction_loss``.
    """

    #: layout of ``TrainStepOutput.feature_acts``: None follows ``cfg.use_sparse_activations`` as
    #: SAELens does (False, its default: dense; True: coalesced sparse COO); "coo" or "dense"
    #: force one. SAETrainer's bookkeeping on COO runs ~40-80 ms on an idle 2-core machine at
    #: B=4096, F=16384, k=64 (dense ~270 ms), but its internal sorts become slow (~0.3-0.5 s)
    #: when the cores are oversubscribed. :func:`use_fast_bookkeeping` sets "coo".
    feature_acts_layout: str | None = None
    #: True: the encoder writes ``hidden_pre`` into a ``[B, F]`` buffer kept across steps and the
    #: step returns that buffer, overwritten by the next step (a fresh tensor this large is
    #: page-faulted anew on every CPU step: see ``dense_encoder.encoder_preacts``). False
    #: (SAELens' contract): every step returns a tensor of its own.
    reuse_hidden_pre: bool = False
    #: whether SAELens' counterpart honours ``use_sparse_activations`` (its BatchTopK does not:
    #: always dense)
    follows_use_sparse_activations: bool = True

    cfg: Any
    W_enc: torch.nn.Parameter
    b_enc: torch.nn.Parameter
    W_dec: torch.nn.Parameter
    b_dec: torch.nn.Parameter

    # ---- pieces -------------------------------------------------------------------------
    def _fast_sae_in(self, x: torch.Tensor) -> torch.Tensor:
        """``process_sae_in`` without the ``b_dec`` subtraction (x is data: no gradient)."""
        sae_in = x.to(self.dtype)  # type: ignore[attr-defined]
        sae_in = self.reshape_fn_in(sae_in)  # type: ignore[attr-defined]
        sae_in = self.hook_sae_input(sae_in)  # type: ignore[attr-defined]
        sae_in = sae_in.reshape(-1, sae_in.shape[-1])  # [..., d_in] -> [N, d_in], as SAELens accepts
        return self.run_time_activation_norm_fn_in(sae_in)  # type: ignore[attr-defined]

    @torch.no_grad()
    def _fast_hidden_pre(self, sae_in_nob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense no-grad encoder forward: ``(sae_in, hidden_pre)``, hidden_pre rescaled.

        With ``reuse_hidden_pre``, ``hidden_pre`` is written into a ``[B, F]`` buffer kept across
        steps, so it is only valid until the next training step (see :func:`encoder_preacts`). It
        is in the compute dtype of the autocast context (bfloat16 under a bfloat16 autocast; the selected
        values are then recomputed in float32 by ``_exact_selected``).
        """
        sae_in = sae_in_nob - self.b_dec if self.cfg.apply_b_dec_to_input else sae_in_nob
        hidden_pre = encoder_preacts(self, self._buffer_name("_hidden_pre_buffer"), sae_in, self.W_enc, self.b_enc)
        hidden_pre = self.hook_sae_acts_pre(hidden_pre)  # type: ignore[attr-defined]  # fires as in SAELens' encode
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre.mul_(self.W_dec.norm(dim=-1).to(hidden_pre.dtype))
        return sae_in, hidden_pre

    @torch.no_grad()
    def _exact_selected(self, selected: torch.Tensor, pattern: SparsePattern, sae_in: torch.Tensor) -> torch.Tensor:
        """The selected (rescaled) pre-activations in the SAE's dtype: ``selected`` itself when
        the encoder ran in it, else recomputed at the selection (see :func:`exact_preacts`)."""
        if selected.dtype == self.W_enc.dtype:
            return selected
        vals = exact_preacts(pattern, sae_in, self.W_enc, self.b_enc)
        if self.cfg.rescale_acts_by_decoder_norm:
            vals.mul_(self.W_dec.norm(dim=-1)[pattern.cols])
        return vals

    def _fast_values(
        self, selected: torch.Tensor, pattern: SparsePattern, sae_in: torch.Tensor, relu: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable ``(acts, decode_weights)`` at the selected latents.

        Reproduces SAELens exactly: ``acts = relu(hidden_pre * n)`` at the selection and the
        decoder sees ``acts * (1 / n)``, with gradients through the norms ``n = ||W_dec_f||``.
        ``selected`` are the (rescaled) values taken from the no-grad ``hidden_pre``.
        """
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        selected = self._exact_selected(selected, pattern, sae_in)
        if self.cfg.rescale_acts_by_decoder_norm:
            n_sel = row_norms(self.W_dec)[pattern.cols]
            raw_vals = selected / n_sel.detach()
            raw = selected_preacts(raw_vals, pattern, sae_in, self.W_enc, self.b_enc, b_dec)
            scaled = raw * n_sel
            # forward value is exactly SAELens' hidden_pre * n; gradient is that of raw * n
            scaled = scaled + (selected - scaled.detach())
            acts = scaled.relu() if relu else scaled
            return acts, acts * (1.0 / n_sel)
        raw = selected_preacts(selected, pattern, sae_in, self.W_enc, self.b_enc, b_dec)
        acts = raw.relu() if relu else raw
        return acts, acts

    def _fast_out(self, x_hat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Decoder output ``[N, d]`` -> the input's shape (``like``), through SAELens' output hooks."""
        x_hat = self.hook_sae_recons(x_hat)  # type: ignore[attr-defined]
        x_hat = self.run_time_activation_norm_fn_out(x_hat)  # type: ignore[attr-defined]
        return self.reshape_fn_out(x_hat, self.d_head).reshape(like.shape)  # type: ignore[attr-defined]

    def _step_output(
        self,
        x: torch.Tensor,
        sae_out: torch.Tensor,
        pattern: SparsePattern,
        acts: torch.Tensor,
        hidden_pre: torch.Tensor,
        losses: dict[str, torch.Tensor],
    ) -> TrainStepOutput:
        """The step's ``TrainStepOutput`` as SAELens shapes it for input ``x [..., d_in]``:
        ``feature_acts`` and ``hidden_pre`` ``[..., d_sae]`` (through ``hook_sae_acts_post``)."""
        lead = _lead_shape(x, pattern.n_rows)
        feature_acts = self.hook_sae_acts_post(self._feature_acts(pattern, acts, lead))  # type: ignore[attr-defined]
        return TrainStepOutput(
            sae_in=x,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre.reshape(*lead, hidden_pre.shape[-1]),
            loss=sum(losses.values()),  # type: ignore[arg-type]
            losses=losses,
        )

    def _auxk_budget(
        self, x: torch.Tensor, sae_out: torch.Tensor, dead_neuron_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, int, float, torch.Tensor] | None:
        """What SAELens' TopK AuxK needs before it picks latents: ``(residual x − x̂, k_aux, scale,
        dead latent indices)`` with ``k_aux = min(d/2, #dead)`` and ``scale = min(#dead / (d/2), 1)``;
        None when no latent is dead."""
        if dead_neuron_mask is None or (num_dead := int(dead_neuron_mask.sum())) == 0:
            return None
        if self.cfg.normalize_activations in ("constant_norm_rescale", "layer_norm"):
            raise ValueError(
                "TopK auxiliary loss does not support activation normalization "
                f"(normalize_activations={self.cfg.normalize_activations!r})."
            )
        half = x.shape[-1] // 2
        return (x - sae_out).detach(), min(half, num_dead), min(num_dead / half, 1.0), dead_neuron_mask.nonzero().squeeze(1)

    def _fast_aux_loss(
        self,
        x: torch.Tensor,
        sae_out: torch.Tensor,
        hidden_pre: torch.Tensor,
        sae_in: torch.Tensor,
        dead_neuron_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """SAELens' ``calculate_topk_aux_loss`` on the sparse path."""
        budget = self._auxk_budget(x, sae_out, dead_neuron_mask)
        if budget is None:
            return sae_out.new_tensor(0.0)
        residual, k_aux, scale, dead_idx = budget
        with torch.no_grad():
            sub = hidden_pre.index_select(1, dead_idx)
            vals, pos = sub.topk(k_aux, dim=-1, sorted=False)
            pattern = SparsePattern.from_topk(dead_idx[pos], self.cfg.d_sae)
        _, dec_w = self._fast_values(vals.reshape(-1), pattern, sae_in, relu=False)
        recons = sparse_decode(dec_w, pattern, self.W_dec, None)
        recons = self.reshape_fn_out(recons, self.d_head).reshape(residual.shape)  # type: ignore[attr-defined]
        auxk_loss = (recons - residual).pow(2).sum(dim=-1).mean()
        return self.cfg.aux_loss_coefficient * scale * auxk_loss

    def _buffer_name(self, name: str) -> str | None:
        """The attribute the encoder's ``[B, F]`` output is kept under, or None (a fresh tensor)."""
        return name if self.reuse_hidden_pre else None

    def _layout(self) -> str:
        layout = self.feature_acts_layout
        if layout is None:
            sparse = self.follows_use_sparse_activations and getattr(self.cfg, "use_sparse_activations", False)
            return "coo" if sparse else "dense"
        if layout not in ("coo", "dense"):
            raise ValueError(f"feature_acts_layout must be None, 'coo' or 'dense'; got {layout!r}")
        return layout

    def _feature_acts(self, pattern: SparsePattern, acts: torch.Tensor, lead: tuple[int, ...] | None = None) -> torch.Tensor:
        """``[N, d_sae]`` (or ``[*lead, d_sae]``) activations in the layout :meth:`_layout` names."""
        lead = (pattern.n_rows,) if lead is None else tuple(lead)
        if self._layout() == "dense":
            return pattern.to_dense(acts.detach()).reshape(*lead, pattern.n_latents)
        coo = pattern.to_sparse_coo(acts.detach())
        if len(lead) == 1:
            return coo
        rows, cols = coo._indices()
        index = torch.stack([*torch.unravel_index(rows, lead), cols])
        return torch.sparse_coo_tensor(
            index, coo._values(), (*lead, pattern.n_latents), is_coalesced=True, check_invariants=False
        )

    # ---- the step -----------------------------------------------------------------------
    def _select(self, hidden_pre: torch.Tensor) -> tuple[torch.Tensor, SparsePattern]:
        raise NotImplementedError

    def fast_training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x = step_input.sae_in
        sae_in_nob = self._fast_sae_in(x)
        sae_in, hidden_pre = self._fast_hidden_pre(sae_in_nob)
        with torch.no_grad():
            selected, pattern = self._select(hidden_pre)
        acts, dec_w = self._fast_values(selected, pattern, sae_in, relu=True)
        sae_out = self._fast_out(sparse_decode(dec_w, pattern, self.W_dec, self.b_dec), like=x)
        mse_loss = (sae_out - x).pow(2).sum(dim=-1).mean()
        aux = self._fast_aux_loss(x, sae_out, hidden_pre, sae_in, step_input.dead_neuron_mask)
        losses = {"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux}
        return self._step_output(x, sae_out, pattern, acts, hidden_pre, losses)


def use_fast_bookkeeping(sae: Any) -> Any:
    """Opt a training SAE of the fast path (any :class:`FastTopKMixin`) into its two departures
    from SAELens' contract: COO ``feature_acts`` and a reused ``hidden_pre`` buffer (see the
    module docstring); other SAEs are returned unchanged. Returns ``sae``."""
    if hasattr(sae, "reuse_hidden_pre"):  # a FastTopKMixin (by attribute: a reloaded module makes a second class)
        sae.feature_acts_layout = "coo"
        sae.reuse_hidden_pre = True
    return sae


# ---------------------------------------------------------------------------------------
# TopK
# ---------------------------------------------------------------------------------------
@dataclass
class SparseTopKTrainingSAEConfig(TopKTrainingSAEConfig):
    """SAELens' TopK training config (same fields); trains on the sparse path, saves as "topk"."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return "sparse_topk"

    @override
    def get_inference_config_class(self) -> type[SAEConfig]:
        return TopKSAEConfig


class SparseTopKTrainingSAE(FastTopKMixin, TopKTrainingSAE):
    """SAELens ``TopKTrainingSAE`` whose training step runs on the sparse path."""

    cfg: SparseTopKTrainingSAEConfig  # type: ignore[assignment]

    def _select(self, hidden_pre: torch.Tensor) -> tuple[torch.Tensor, SparsePattern]:
        vals, idx = hidden_pre.topk(self.cfg.k, dim=-1, sorted=False)
        return vals.reshape(-1), SparsePattern.from_topk(idx, self.cfg.d_sae)

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        return self.fast_training_forward_pass(step_input)


# ---------------------------------------------------------------------------------------
# BatchTopK
# ---------------------------------------------------------------------------------------
@dataclass
class SparseBatchTopKTrainingSAEConfig(BatchTopKTrainingSAEConfig):
    """SAELens' BatchTopK training config (same fields); sparse path, saved as "jumprelu"."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return "sparse_batchtopk"


class SparseBatchTopKTrainingSAE(FastTopKMixin, BatchTopKTrainingSAE):
    """SAELens ``BatchTopKTrainingSAE`` (threshold EMA, JumpReLU export) on the sparse path."""

    cfg: SparseBatchTopKTrainingSAEConfig  # type: ignore[assignment]
    follows_use_sparse_activations = False  # SAELens' BatchTopK returns dense activations regardless

    def _select(self, hidden_pre: torch.Tensor) -> tuple[torch.Tensor, SparsePattern]:
        B, F = hidden_pre.shape
        n_keep = int(self.cfg.k * B)
        # Selecting on hidden_pre rather than relu(hidden_pre) as SAELens does changes only
        # which non-positive entries fill the batch when fewer than n_keep are positive; their
        # activation relu(.) = 0 and its gradient are the same either way, and no [B, F]
        # relu copy is made.
        _, flat = batch_topk_select(hidden_pre, n_keep)
        pattern = SparsePattern.from_flat(flat, B, F)
        flat = pattern.rows * F + pattern.cols
        # the selected entries of hidden_pre itself (the relu is applied in _fast_values)
        return hidden_pre.view(-1)[flat], pattern

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        output = self.fast_training_forward_pass(step_input)
        self._update_threshold_from_values(output.feature_acts)
        output.metrics["topk_threshold"] = self.topk_threshold
        return output

    @torch.no_grad()
    def _update_threshold_from_values(self, feature_acts: torch.Tensor) -> None:
        """SAELens' ``update_topk_threshold`` on the COO values (same EMA, double precision).

        Written without boolean indexing or a Python ``if`` on a device value, so a GPU step
        does not wait here: the smallest positive value is a masked minimum (``inf`` when none is
        positive, and then the threshold is kept)."""
        vals = feature_acts._values() if feature_acts.is_sparse else feature_acts.flatten()
        if vals.numel() == 0:
            return
        inf = torch.tensor(float("inf"), dtype=vals.dtype, device=vals.device)
        min_positive = torch.where(vals > 0, vals, inf).amin().to(self.topk_threshold.dtype)
        lr = self.cfg.topk_threshold_lr
        updated = (1 - lr) * self.topk_threshold + lr * min_positive
        self.topk_threshold = torch.where(torch.isfinite(min_positive), updated, self.topk_threshold)


# ---------------------------------------------------------------------------------------
# recipes: what studies ask for by name
# ---------------------------------------------------------------------------------------
register(
    Recipe(
        name="topk",
        training_class="sparse_topk",
        reference_class="topk",
        summary="TopK (Gao et al. 2024): the k largest pre-activations per token; sparse training path.",
    ),
    training={"sparse_topk": (SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig)},
)
register(
    Recipe(
        name="batchtopk",
        training_class="sparse_batchtopk",
        reference_class="batchtopk",
        batch_threshold=True,
        summary="BatchTopK (Bussmann et al. 2024): the k·B largest over the batch; saved as JumpReLU.",
    ),
    training={"sparse_batchtopk": (SparseBatchTopKTrainingSAE, SparseBatchTopKTrainingSAEConfig)},
)
