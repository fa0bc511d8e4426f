"""HierarchicalTopK (arXiv 2505.24473) and Multi-TopK (Gao et al. 2024) as SAELens architectures.

HierarchicalTopK trains one SAE for every sparsity level k <= K at once: per token take the top K
latents in descending order (values v_1 >= ... >= v_K, decoder rows e_i, bias b), form the
prefix reconstructions x_hat_j = b + sum_{i<=j} v_i e_i and minimise the mean over levels
j in J of ||x - x_hat_j||^2 (summed over d, mean over the batch); J = {1..K} unless ``levels``
names a sorted subset. Multi-TopK is the same machinery with two levels and weights:
L(k) + L(4k)/8. Both use the shared sparse path of :mod:`sae_studies.saes.sparse_decode`
(dense encoder forward; :func:`prefix_mse_loss` for the nested loss, memory-flat), AuxK and
``rescale_acts_by_decoder_norm`` exactly as SAELens' TopK.

Saved with ``save_inference_model`` both become a :class:`HierarchicalTopKSAE` ("hierarchical_topk"
inference architecture): a SAELens TopK SAE whose ``k`` can be chosen at inference, up to the
``k_max`` it was trained for (``sae.set_k(k)`` or ``sae.encode(x, k=k)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import SAEConfig, TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopK, TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from typing_extensions import override

from sae_studies.checks import check_int
from sae_studies.saes.registry import Recipe, register
from sae_studies.saes.sparse_decode import SparsePattern, prefix_level_weights, prefix_mse_loss, sort_small
from sae_studies.saes.sparse_topk import FastTopKMixin

__all__ = [
    "HierarchicalTopKSAEConfig",
    "HierarchicalTopKSAE",
    "HierarchicalTopKTrainingSAEConfig",
    "HierarchicalTopKTrainingSAE",
    "MultiTopKTrainingSAEConfig",
    "MultiTopKTrainingSAE",
]


def _check_levels(levels: Any, K: int) -> list[int] | None:
    if levels is None:
        return None
    levels = list(levels)
    if not levels:
        raise ValueError(
            f"levels must be None (all of 1..{K}) or a non-empty increasing list of integers in 1..{K} (k={K}); got levels=[]"
        )
    for lv in levels:
        check_int("levels", lv, 1, K, f" (each level at most k={K})")
    if any(a >= b for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must be strictly increasing integers in 1..{K}; got levels={levels!r}")
    return levels


# ---------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------
@dataclass
class HierarchicalTopKSAEConfig(TopKSAEConfig):
    """TopK inference config with a selectable ``k`` (default) up to ``k_max`` (trained K)."""

    k_max: int | None = None

    @override
    @classmethod
    def architecture(cls) -> str:
        return "hierarchical_topk"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k_max is None:
            self.k_max = self.k
        check_int("k_max", self.k_max, 1, self.d_sae, f" (d_sae={self.d_sae})")
        check_int("k", self.k, 1, self.k_max, f" (k_max={self.k_max}, the K it was trained for)")


class HierarchicalTopKSAE(TopKSAE):
    """SAELens TopK SAE trained for every ``k <= k_max``; pick ``k`` at inference."""

    cfg: HierarchicalTopKSAEConfig  # type: ignore[assignment]

    def set_k(self, k: int) -> HierarchicalTopKSAE:
        """Use the top ``k`` latents from now on (1 <= k <= cfg.k_max)."""
        check_int("k", k, 1, self.cfg.k_max, f" (k_max={self.cfg.k_max}, the K it was trained for)")
        self.cfg.k = k
        self.activation_fn = TopK(k)
        return self

    @override
    def encode(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """TopK encode with the configured ``k``, or with ``k`` for this call only."""
        if k is None:
            return super().encode(x)
        check_int("k", k, 1, self.cfg.k_max, f" (k_max={self.cfg.k_max}, the K it was trained for)")
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        return self.hook_sae_acts_post(TopK(k)(hidden_pre))


# ---------------------------------------------------------------------------------------
# training: shared
# ---------------------------------------------------------------------------------------
class _PrefixTrainingMixin(FastTopKMixin):
    """Sorted top-``k_max`` selection + nested-prefix loss + AuxK on the sparse path."""

    def _level_weights(self) -> torch.Tensor:
        raise NotImplementedError

    def _report_k(self) -> int:
        """The level whose reconstruction is reported as ``sae_out`` (and feeds AuxK)."""
        raise NotImplementedError

    def _select(self, hidden_pre: torch.Tensor) -> tuple[torch.Tensor, SparsePattern]:
        vals, idx = hidden_pre.topk(self.cfg.k_max, dim=-1, sorted=True)
        return vals.reshape(-1), SparsePattern.from_topk(idx, self.cfg.d_sae)

    def _rank_exact(
        self, selected: torch.Tensor, pattern: SparsePattern, sae_in: torch.Tensor
    ) -> tuple[torch.Tensor, SparsePattern]:
        """After a bfloat16 selection: the selected values recomputed in float32 and each row's
        K latents re-sorted by them, so the prefix levels follow the exact ranking."""
        K = self.cfg.k_max
        vals = self._exact_selected(selected, pattern, sae_in).view(-1, K)
        order = sort_small(-vals, dim=-1)[1]
        vals = vals.gather(1, order)
        cols = pattern.cols.view(-1, K).gather(1, order)
        return vals.reshape(-1), SparsePattern.from_topk(cols, self.cfg.d_sae)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        if self.cfg.normalize_activations in ("constant_norm_rescale", "layer_norm"):
            raise ValueError(
                f"{self.cfg.architecture()} supports normalize_activations in "
                "['none', 'expected_average_only_in', 'covariance_whitening']; got "
                f"normalize_activations={self.cfg.normalize_activations!r}"
            )
        x = step_input.sae_in
        sae_in_nob = self._fast_sae_in(x)
        sae_in, hidden_pre = self._fast_hidden_pre(sae_in_nob)
        with torch.no_grad():
            selected, pattern = self._select(hidden_pre)
            if selected.dtype != self.W_enc.dtype:
                selected, pattern = self._rank_exact(selected, pattern, sae_in)
        acts, dec_w = self._fast_values(selected, pattern, sae_in, relu=True)
        B, K = sae_in_nob.shape[0], self.cfg.k_max
        weights = self._level_weights()  # stays on the CPU: the loss reads it on the host (no GPU sync)
        loss = prefix_mse_loss(dec_w.view(B, K), pattern, self.W_dec, self.b_dec, sae_in_nob, weights)
        kr = self._report_k()
        with torch.no_grad():
            if kr == K:
                rep_pat, rep_w, rep_acts = pattern, dec_w, acts
            else:
                idx = pattern.cols.view(B, K)[:, :kr]
                rep_pat = SparsePattern.from_topk(idx, self.cfg.d_sae)
                rep_w = dec_w.view(B, K)[:, :kr].reshape(-1)
                rep_acts = acts.view(B, K)[:, :kr].reshape(-1)
            sae_out = self._fast_out(rep_pat.decode(rep_w.detach(), self.W_dec) + self.b_dec, like=x)
        aux = self._fast_aux_loss(x, sae_out, hidden_pre, sae_in, step_input.dead_neuron_mask)
        out = self._step_output(
            x, sae_out, rep_pat, rep_acts, hidden_pre, {"mse_loss": loss, "auxiliary_reconstruction_loss": aux}
        )
        out.metrics["mse_loss_at_k"] = (sae_out - x).pow(2).sum(-1).mean().detach()
        return out


# ---------------------------------------------------------------------------------------
# HierarchicalTopK
# ---------------------------------------------------------------------------------------
@dataclass
class HierarchicalTopKTrainingSAEConfig(TopKTrainingSAEConfig):
    """HierarchicalTopK: ``k`` is K (the largest level); ``levels`` an optional sorted subset
    of 1..K averaged over (default: all of 1..K). Other fields as SAELens' TopK."""

    levels: list[int] | None = None

    @override
    @classmethod
    def architecture(cls) -> str:
        return "hierarchical_topk"

    @override
    def get_inference_config_class(self) -> type[SAEConfig]:
        return HierarchicalTopKSAEConfig

    @property
    def k_max(self) -> int:
        return self.k

    def __post_init__(self) -> None:
        check_int("k", self.k, 1, self.d_sae, f" (K, at most d_sae={self.d_sae})")
        self.levels = _check_levels(self.levels, self.k)
        super().__post_init__()


class HierarchicalTopKTrainingSAE(_PrefixTrainingMixin, TopKTrainingSAE):
    cfg: HierarchicalTopKTrainingSAEConfig  # type: ignore[assignment]

    def _level_weights(self) -> torch.Tensor:
        return prefix_level_weights(self.cfg.k, self.cfg.levels)

    def _report_k(self) -> int:
        return self.cfg.k

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        return _PrefixTrainingMixin.training_forward_pass(self, step_input)


# ---------------------------------------------------------------------------------------
# Multi-TopK
# ---------------------------------------------------------------------------------------
@dataclass
class MultiTopKTrainingSAEConfig(TopKTrainingSAEConfig):
    """Multi-TopK (Gao et al. 2024): loss ``L(k) + multi_topk_weight * L(multi_topk_factor * k)``
    (defaults 1/8 and 4). Saved as a ``hierarchical_topk`` inference SAE with ``k`` selectable
    up to ``multi_topk_factor * k``."""

    multi_topk_factor: int = 4
    multi_topk_weight: float = 0.125

    @override
    @classmethod
    def architecture(cls) -> str:
        return "multi_topk"

    @override
    def get_inference_config_class(self) -> type[SAEConfig]:
        return HierarchicalTopKSAEConfig

    @property
    def k_max(self) -> int:
        return self.k * self.multi_topk_factor

    def __post_init__(self) -> None:
        check_int("multi_topk_factor", self.multi_topk_factor, 2, None)
        check_int(
            "k", self.k, 1, self.d_sae // self.multi_topk_factor, f" (k * multi_topk_factor must be at most d_sae={self.d_sae})"
        )
        if not self.multi_topk_weight >= 0:
            raise ValueError(f"multi_topk_weight must be >= 0; got {self.multi_topk_weight!r}")
        super().__post_init__()


class MultiTopKTrainingSAE(_PrefixTrainingMixin, TopKTrainingSAE):
    cfg: MultiTopKTrainingSAEConfig  # type: ignore[assignment]

    def _level_weights(self) -> torch.Tensor:
        return prefix_level_weights(self.cfg.k_max, [self.cfg.k, self.cfg.k_max], [1.0, self.cfg.multi_topk_weight])

    def _report_k(self) -> int:
        return self.cfg.k

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        return _PrefixTrainingMixin.training_forward_pass(self, step_input)


# ---------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------
def _hierarchical_options(d_sae: int, k: int | None, levels: list[int] | None = None) -> dict[str, Any]:
    """``levels``: an optional strictly increasing subset of 1..K averaged over (default all)."""
    return {} if levels is None else {"levels": _check_levels(levels, k)}


def _multi_topk_options(d_sae: int, k: int | None, factor: int = 4, weight: float = 0.125) -> dict[str, Any]:
    """``factor``: the second level is factor·k (needs factor·k ≤ d_sae); ``weight`` its loss weight."""
    check_int("multi_topk factor", factor, 2)
    check_int("k", k, 1, d_sae // factor, f" (k * factor = {k} * {factor} must be at most d_sae={d_sae})")
    extra: dict[str, Any] = {}
    if factor != 4:
        extra["multi_topk_factor"] = factor
    if weight != 0.125:
        extra["multi_topk_weight"] = weight
    return extra


register(
    Recipe(
        name="hierarchical_topk",
        training_class="hierarchical_topk",
        options=_hierarchical_options,
        summary="HierarchicalTopK (arXiv 2505.24473): one SAE for every k ≤ K, loss averaged over nested prefixes.",
    ),
    training={"hierarchical_topk": (HierarchicalTopKTrainingSAE, HierarchicalTopKTrainingSAEConfig)},
    inference={"hierarchical_topk": (HierarchicalTopKSAE, HierarchicalTopKSAEConfig)},
)
register(
    Recipe(
        name="multi_topk",
        training_class="multi_topk",
        options=_multi_topk_options,
        summary="Multi-TopK (Gao et al. 2024): L(k) + L(4k)/8; saved as a selectable-k TopK SAE.",
    ),
    training={"multi_topk": (MultiTopKTrainingSAE, MultiTopKTrainingSAEConfig)},
)
