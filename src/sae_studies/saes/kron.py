"""KronSAE (arXiv 2505.22255): a Kronecker-factorised TopK encoder with the mAND activation.

The dictionary of ``F = h·m·n`` latents is split into ``h`` heads of ``m × n`` pairs (m ≤ n).
The encoder is one ``[d, h(m+n)]`` matrix with a bias: columns ``k·m + i`` hold ``P_{k,i}``,
columns ``h·m + k·n + j`` hold ``Q_{k,j}``. Pre-latents ``u = ReLU(P_k x + b)``,
``v = ReLU(Q_k x + b)``; the post-latent of pair ``(k, i, j)`` (latent ``k·m·n + i·n + j``:
row-major within a head, heads concatenated) is

* ``mand`` (default): ``sqrt(u_i v_j)`` when both are positive, exactly 0 otherwise (the paper's
  definition; its listing's ``sqrt(u v + 1e-5)`` would give every inactive pair ~0.003);
* ``relu_product``: ``u_i v_j``;
* ``product``: ``p_i q_j`` of the raw pre-activations (no ReLU), ranked by value and ReLU'd
  after the top-k as TopK does.

The global top k over all F post-latents is decoded by an ordinary dense decoder plus bias.

Training runs on the repository's sparse path and never writes the ``[B, F]`` post-latent
matrix: the composition is monotone in ``u_i v_j`` (or, for ``product``, the largest pair of a
head is one of its four extreme products), so a pair can be among a row's top k only if its
head's largest pair is among the k largest head maxima. :func:`kron_select` takes those
``min(k, h)`` heads and ranks only their ``m·n`` products, so the encoder costs a dense
``[B, d] @ [d, h(m+n)]`` forward plus ``O(B(h(m+n) + k·m·n))`` selection; gradients reach the
encoder only at the (≤ 2k per row) parents of the selected pairs (:func:`selected_preacts`),
and decoding goes through :func:`sparse_decode`.

``rescale_acts_by_decoder_norm`` (default True, as SAELens' TopK): the decoder is weight-
normalised — a latent's activation is its coefficient on the unit direction
``W_dec_f / ||W_dec_f||``, so the selection ranks contributions and decoder-norm drift changes
nothing. SAELens' TopK folds the norms into a dense encoder; a factorised one cannot take
per-pair scales, so here folding (activation-norm scaling, whitening, saving) normalises the
decoder rows instead and switches the flag off: the output is unchanged.

Initialisation: encoder ``N(0, 1) / sqrt(2F)``, encoder bias 0, decoder row ``(k, i, j)`` =
normalised ``P_{k,i} + Q_{k,j}``. With SAELens' ``expected_average_only_in`` the inputs have
norm ``sqrt(d)``, so the pre-activations start with standard deviation ``sqrt(d / 2F) =
1/sqrt(2·F/d)`` (0.25 at F = 8d, 0.09 at F = 64d): the scale SAELens' TopK starts at (0.1,
from its tied 0.1-norm init), so the paper's init is kept unchanged (SAELens'
``decoder_init_norm`` does not apply: the decoder rows start at unit norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import SAE, SAEConfig, TrainStepInput, TrainStepOutput
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from torch import nn
from typing_extensions import override

from sae_studies.checks import check_choice, check_int
from sae_studies.saes.dense_encoder import encoder_preacts, exact_preacts
from sae_studies.saes.registry import Recipe, register
from sae_studies.saes.sparse_decode import (
    SparsePattern,
    row_norms,
    selected_preacts,
    sort_small,
    sparse_decode,
)
from sae_studies.saes.sparse_topk import FastTopKMixin

__all__ = [
    "COMPOSITIONS",
    "KronShape",
    "kron_shape",
    "mand",
    "compose",
    "kron_select",
    "kron_post_latents_dense",
    "KronSAEConfig",
    "KronSAE",
    "KronTrainingSAEConfig",
    "KronTrainingSAE",
]

COMPOSITIONS = ("mand", "relu_product", "product")


# ---------------------------------------------------------------------------------------
# shape and checks
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KronShape:
    heads: int
    m: int
    n: int

    @property
    def d_sae(self) -> int:
        return self.heads * self.m * self.n

    @property
    def n_pre(self) -> int:
        """Encoder columns h·(m + n)."""
        return self.heads * (self.m + self.n)

    def parents(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder columns ``(u_col, v_col)`` of the parents of latents (any shape)."""
        mn = self.m * self.n
        head, ij = latents // mn, latents % mn
        return head * self.m + ij // self.n, self.heads * self.m + head * self.n + ij % self.n


def kron_shape(d_sae: int, heads: int | None, m: int, n: int) -> KronShape:
    """Validated ``(heads, m, n)`` with ``heads·m·n = d_sae`` (``heads=None``: ``d_sae / (m·n)``)."""
    check_int("d_sae", d_sae, 1)
    check_int("m", m, 1, hint=" (pre-latents of the first factor per head)")
    check_int("n", n, 1, hint=" (pre-latents of the second factor per head)")
    if m > n:
        raise ValueError(f"KronSAE needs m ≤ n (swap them: the pairs are the same); got m={m}, n={n}")
    if heads is None:
        if d_sae % (m * n):
            raise ValueError(
                f"KronSAE dictionary size d_sae={d_sae} does not factor as heads·m·n with m={m}, n={n}: "
                f"m·n={m * n} does not divide {d_sae} (allowed: multiples of {m * n})"
            )
        heads = d_sae // (m * n)
    check_int("heads", heads, 1)
    if heads * m * n != d_sae:
        raise ValueError(
            f"KronSAE needs d_sae = heads·m·n; got heads={heads}, m={m}, n={n} ({heads * m * n} latents) for d_sae={d_sae}"
        )
    return KronShape(int(heads), int(m), int(n))


# ---------------------------------------------------------------------------------------
# the composition of pre-latents into post-latents
# ---------------------------------------------------------------------------------------
def mand(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sqrt(u v)`` where ``u > 0`` and ``v > 0``, exactly 0 elsewhere; gradient
    ``½ sqrt(v/u)`` on the active set, 0 elsewhere (finite everywhere: the square root is
    taken of 1 on inactive pairs, never of 0)."""
    prod = u * v
    active = (u > 0) & (v > 0) & (prod > 0)  # prod > 0 also drops pairs whose product underflows
    safe = torch.where(active, prod, torch.ones_like(prod))
    return torch.where(active, safe.sqrt(), torch.zeros_like(prod))


def _ranking(u: torch.Tensor, v: torch.Tensor, composition: str) -> torch.Tensor:
    """What the top-k ranks: ``relu(u)·relu(v)`` (mand is its monotone square root) or ``u·v``."""
    if composition == "product":
        return u * v
    return u.clamp_min(0) * v.clamp_min(0)


def compose(p: torch.Tensor, q: torch.Tensor, composition: str) -> torch.Tensor:
    """Post-latent activations from raw parent pre-activations ``p`` (P side), ``q`` (Q side)."""
    if composition == "mand":
        return mand(p.relu(), q.relu())
    if composition == "relu_product":
        return p.relu() * q.relu()
    if composition == "product":
        return (p * q).relu()  # ranked by p·q; ReLU after the top-k, as TopK does
    raise ValueError(f"composition must be one of {list(COMPOSITIONS)}; got {composition!r}")


def _split(pre: torch.Tensor, shape: KronShape) -> tuple[torch.Tensor, torch.Tensor]:
    """Views ``[B, h, m]`` and ``[B, h, n]`` of the raw pre-activations ``[B, h(m+n)]``."""
    B = pre.shape[0]
    hm = shape.heads * shape.m
    return pre[:, :hm].view(B, shape.heads, shape.m), pre[:, hm:].view(B, shape.heads, shape.n)


@torch.no_grad()
def kron_post_latents_dense(pre: torch.Tensor, shape: KronShape, composition: str) -> torch.Tensor:
    """The ``[B, F]`` ranking matrix written out (tests and small checks only):
    ``relu(p_i)·relu(q_j)`` (or ``p_i q_j`` for ``product``) of every pair, row-major per head."""
    P, Q = _split(pre, shape)
    return _ranking(P.unsqueeze(-1), Q.unsqueeze(-2), composition).reshape(pre.shape[0], shape.d_sae)


@torch.no_grad()
def kron_select(pre: torch.Tensor, shape: KronShape, k: int, composition: str) -> torch.Tensor:
    """The top-``k`` latents per row, ``[B, k]``, without the ``[B, F]`` matrix.

    A pair's ranking value is at most its head's maximum (``max relu(p)·max relu(q)``; for
    ``product`` the largest of the four products of extremes), and every head holds a pair at
    its maximum. So if a pair's head is not among the ``k`` largest head maxima, ``k`` other
    pairs rank at least as high and the pair is not needed: ranking the ``m·n`` pairs of the top
    ``min(k, h)`` heads gives the same top k as the dense matrix (up to the order of ties).
    """
    check_int("k", k, 1, shape.d_sae, f" (at most d_sae={shape.d_sae})")
    P, Q = _split(pre, shape)
    B, h, m, n = pre.shape[0], shape.heads, shape.m, shape.n
    if composition == "product":
        pmax, pmin, qmax, qmin = P.amax(-1), P.amin(-1), Q.amax(-1), Q.amin(-1)
        head_max = torch.maximum(torch.maximum(pmax * qmax, pmin * qmin), torch.maximum(pmax * qmin, pmin * qmax))
    else:
        head_max = P.amax(-1).clamp_min(0) * Q.amax(-1).clamp_min(0)
    n_heads = min(k, h)
    if n_heads < h:
        heads = head_max.topk(n_heads, dim=-1, sorted=False).indices  # [B, n_heads]
        Pc = P.gather(1, heads.unsqueeze(-1).expand(B, n_heads, m))
        Qc = Q.gather(1, heads.unsqueeze(-1).expand(B, n_heads, n))
    else:
        heads, Pc, Qc = None, P, Q
    cand = _ranking(Pc.unsqueeze(-1), Qc.unsqueeze(-2), composition).reshape(B, n_heads * m * n)
    pos = cand.topk(k, dim=-1, sorted=False).indices
    head_pos, ij = pos // (m * n), pos % (m * n)
    head = head_pos if heads is None else heads.gather(1, head_pos)
    return head * (m * n) + ij


def _dense_codes(pre: torch.Tensor, shape: KronShape, k: int, composition: str) -> torch.Tensor:
    """``[B, F]`` activations (zeros but the top k per row), differentiable in ``pre``."""
    cols = kron_select(pre, shape, k, composition)
    u_col, v_col = shape.parents(cols)
    acts = compose(pre.gather(1, u_col), pre.gather(1, v_col), composition)
    return torch.zeros(pre.shape[0], shape.d_sae, dtype=pre.dtype, device=pre.device).scatter(1, cols, acts)


def _row_unique(cols: torch.Tensor, n_cols: int) -> tuple[SparsePattern, torch.Tensor]:
    """The distinct entries of each row of ``cols [B, c]`` as a row-ordered pattern, and ``inv
    [B, c]``: the pattern entry of each input entry. One row-wise sort of ``c`` entries per row
    (a global ``torch.unique`` over ``B·c`` entries costs several times more)."""
    B, c = cols.shape
    srt, perm = sort_small(cols, dim=-1)
    new = torch.ones_like(srt, dtype=torch.bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    ids = new.view(-1).cumsum(0) - 1
    inv = torch.empty_like(ids).view(B, c).scatter_(1, perm, ids.view(B, c))
    keep = new.view(-1)
    rows = torch.arange(B, device=cols.device).repeat_interleave(c)[keep]
    return SparsePattern(rows, srt.view(-1)[keep], B, n_cols), inv


def _flatten(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    return x.reshape(-1, x.shape[-1]), tuple(x.shape[:-1])


# ---------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------
def _kron_init(sae: Any, shape: KronShape) -> None:
    """Encoder N(0, 1)/sqrt(2F) (bias 0); decoder row (k, i, j) = normalised P_{k,i} + Q_{k,j}."""
    d, F = sae.cfg.d_in, shape.d_sae
    kw = {"dtype": sae.dtype, "device": sae.device}
    W_enc = torch.randn(d, shape.n_pre, **kw) / (2 * F) ** 0.5
    hm = shape.heads * shape.m
    P = W_enc[:, :hm].T.reshape(shape.heads, shape.m, 1, d)
    Q = W_enc[:, hm:].T.reshape(shape.heads, 1, shape.n, d)
    W_dec = (P + Q).reshape(F, d)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sae.W_enc = nn.Parameter(W_enc.contiguous())
    sae.b_enc = nn.Parameter(torch.zeros(shape.n_pre, **kw))
    sae.W_dec = nn.Parameter(W_dec.contiguous())
    sae.b_dec = nn.Parameter(torch.zeros(d, **kw))


class _KronWeightsMixin:
    """What the inference and training classes share: the shape, encode, and norm folding."""

    cfg: Any
    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    @property
    def factors(self) -> KronShape:
        return KronShape(self.cfg.heads, self.cfg.m, self.cfg.n)

    def kron_pre(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pre-activations ``[..., h(m+n)]`` (input processed as SAELens does)."""
        sae_in = self.process_sae_in(x)  # type: ignore[attr-defined]
        return self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)  # type: ignore[attr-defined]

    def _encode_dense(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.kron_pre(x)
        flat, lead = _flatten(pre)
        z = _dense_codes(flat, self.factors, self.cfg.k, self.cfg.composition)
        return self.hook_sae_acts_post(z.reshape(*lead, -1)), pre  # type: ignore[attr-defined]

    @torch.no_grad()
    def _normalise_decoder_rows(self) -> None:
        """Fold a weight-normalised decoder into plain unit rows (the output is unchanged)."""
        if self.cfg.rescale_acts_by_decoder_norm:
            self.W_dec.data.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))
            self.cfg.rescale_acts_by_decoder_norm = False

    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Unit decoder rows. Possible only for a weight-normalised decoder: per-pair norms
        cannot be folded into a factorised encoder."""
        if not self.cfg.rescale_acts_by_decoder_norm:
            if torch.allclose(self.W_dec.norm(dim=-1), torch.ones(1, dtype=self.W_dec.dtype, device=self.W_dec.device)):
                return
            raise NotImplementedError(
                "KronSAE cannot fold decoder norms into its factorised encoder "
                "(rescale_acts_by_decoder_norm=False and the decoder rows are not unit norm)"
            )
        self._normalise_decoder_rows()

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        """Fold the input scale ``s`` (the SAE was trained on ``x·s``) as SAELens' TopK does:
        the folded SAE takes raw ``x``, its activations are the trained ones divided by ``s``,
        and its decoder rows have unit norm (so activation magnitudes compare across
        architectures). The composition is homogeneous in its parents — degree 1 for ``mand``,
        2 for the products — so the parents are scaled by ``1/s`` (``1/sqrt(s)``):
        ``W_enc ← c·s·W_enc``, ``b_enc ← c·b_enc``, ``b_dec ← b_dec / s``."""
        self._normalise_decoder_rows()
        s = float(scaling_factor)
        c = 1.0 / s if self.cfg.composition == "mand" else s**-0.5
        self.W_enc.data.mul_(c * s)
        self.b_enc.data.mul_(c)
        self.b_dec.data.div_(s)
        self.cfg.normalize_activations = "none"

    @torch.no_grad()
    def fold_activation_whitening(self, mean, whitening_matrix, unwhitening_matrix) -> None:
        self._normalise_decoder_rows()
        # not TopK's override (it folds decoder norms into a dense encoder): the base class's
        SAE.fold_activation_whitening(self, mean, whitening_matrix, unwhitening_matrix)  # type: ignore[arg-type]


def _check_cfg(cfg: Any) -> None:
    kron_shape(cfg.d_sae, cfg.heads, cfg.m, cfg.n)
    check_choice("composition", cfg.composition, COMPOSITIONS)
    check_int("k", cfg.k, 1, cfg.d_sae, f" (at most d_sae={cfg.d_sae})")


# ---------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------
@dataclass
class KronSAEConfig(TopKSAEConfig):
    """KronSAE inference: ``heads·m·n = d_sae``, top ``k`` of the composed pairs."""

    heads: int = 1
    m: int = 1
    n: int = 1
    composition: str = "mand"

    @override
    @classmethod
    def architecture(cls) -> str:
        return "kron"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_cfg(self)


class KronSAE(_KronWeightsMixin, TopKSAE):
    """Inference KronSAE: ``encode`` gives the dense ``[..., F]`` code (top k per token),
    ``decode`` is TopK's (dense decoder, unit directions when the decoder is weight-normalised)."""

    cfg: KronSAEConfig  # type: ignore[assignment]

    @override
    def initialize_weights(self) -> None:
        _kron_init(self, self.factors)

    @override
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode_dense(x)[0]


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
@dataclass
class KronTrainingSAEConfig(TopKTrainingSAEConfig):
    """SAELens TopK training config plus the Kronecker shape: ``heads`` (None: d_sae/(m·n)),
    ``m ≤ n``, and ``composition`` in COMPOSITIONS. ``rescale_acts_by_decoder_norm`` means a
    weight-normalised decoder here (see the module docstring)."""

    heads: int | None = None
    m: int = 2
    n: int = 4
    composition: str = "mand"

    @override
    @classmethod
    def architecture(cls) -> str:
        return "kron"

    @override
    def get_inference_config_class(self) -> type[SAEConfig]:
        return KronSAEConfig

    def __post_init__(self) -> None:
        self.heads = kron_shape(self.d_sae, self.heads, self.m, self.n).heads
        _check_cfg(self)
        super().__post_init__()


class KronTrainingSAE(_KronWeightsMixin, FastTopKMixin, TopKTrainingSAE):
    """KronSAE training on the sparse path (see the module docstring); SAELens' MSE + AuxK."""

    cfg: KronTrainingSAEConfig  # type: ignore[assignment]

    @override
    def initialize_weights(self) -> None:
        _kron_init(self, self.factors)

    @override
    def encode_with_hidden_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode_dense(x)

    @override
    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        # not TopK's (it folds decoder norms into a dense encoder); the inference class honours
        # rescale_acts_by_decoder_norm, which SAETrainer's final fold has already switched off
        self.process_state_dict_for_saving(state_dict)

    # ---- sparse training path -------------------------------------------------------------
    @torch.no_grad()
    def _sparse_pre(self, sae_in_nob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sae_in, pre)``: dense no-grad encoder forward (into a buffer kept across steps when
        ``reuse_hidden_pre``), in the compute dtype of the autocast context (:func:`encoder_preacts`)."""
        sae_in = sae_in_nob - self.b_dec if self.cfg.apply_b_dec_to_input else sae_in_nob
        pre = encoder_preacts(self, self._buffer_name("_pre_buffer"), sae_in, self.W_enc, self.b_enc)
        return sae_in, self.hook_sae_acts_pre(pre)  # fires as in kron_pre (inference encode)

    def _pair_acts(self, pre: torch.Tensor, sae_in: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Differentiable activations ``[B·k]`` of the latents ``cols [B, k]``: the encoder
        gradient reaches only their distinct parents (≤ 2k per row), via ``selected_preacts``."""
        B, H = pre.shape
        u_col, v_col = self.factors.parents(cols)
        with torch.no_grad():
            parent_pattern, inv = _row_unique(torch.cat([u_col, v_col], 1), H)
            if pre.dtype == self.W_enc.dtype:
                parent_vals = pre[parent_pattern.rows, parent_pattern.cols]
            else:  # a bfloat16 encoder forward chose the pairs; their parents' values in float32
                parent_vals = exact_preacts(parent_pattern, sae_in, self.W_enc, self.b_enc)
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        parents = selected_preacts(parent_vals, parent_pattern, sae_in, self.W_enc, self.b_enc, b_dec)
        k = cols.shape[1]
        return compose(parents[inv[:, :k]], parents[inv[:, k:]], self.cfg.composition).reshape(-1)

    def _decoder_weights(self, acts: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:
        if self.cfg.rescale_acts_by_decoder_norm:
            return acts / row_norms(self.W_dec)[pattern.cols]
        return acts

    def _kron_aux_loss(
        self,
        x: torch.Tensor,
        sae_out: torch.Tensor,
        pre: torch.Tensor,
        sae_in: torch.Tensor,
        dead_neuron_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """SAELens' TopK AuxK: the top ``d/2`` dead latents (composed only for the dead pairs)
        reconstruct the residual ``x − x̂``, scaled by ``min(#dead / (d/2), 1)``."""
        budget = self._auxk_budget(x, sae_out, dead_neuron_mask)
        if budget is None:
            return sae_out.new_tensor(0.0)
        residual, k_aux, scale, dead = budget
        with torch.no_grad():
            u_col, v_col = self.factors.parents(dead)
            rank = _ranking(pre.index_select(1, u_col), pre.index_select(1, v_col), self.cfg.composition)
            cols = dead[rank.topk(k_aux, dim=-1, sorted=False).indices]
        pattern = SparsePattern.from_topk(cols, self.cfg.d_sae)
        acts = self._pair_acts(pre, sae_in, cols)
        recons = sparse_decode(self._decoder_weights(acts, pattern), pattern, self.W_dec, None)
        recons = self.reshape_fn_out(recons, self.d_head).reshape(residual.shape)
        return self.cfg.aux_loss_coefficient * scale * (recons - residual).pow(2).sum(dim=-1).mean()

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x = step_input.sae_in
        sae_in, pre = self._sparse_pre(self._fast_sae_in(x))
        cols = kron_select(pre, self.factors, self.cfg.k, self.cfg.composition)
        pattern = SparsePattern.from_topk(cols, self.cfg.d_sae)
        acts = self._pair_acts(pre, sae_in, cols)
        x_hat = sparse_decode(self._decoder_weights(acts, pattern), pattern, self.W_dec, self.b_dec)
        sae_out = self._fast_out(x_hat, like=x)
        mse_loss = (sae_out - x).pow(2).sum(dim=-1).mean()
        aux = self._kron_aux_loss(x, sae_out, pre, sae_in, step_input.dead_neuron_mask)
        return self._step_output(x, sae_out, pattern, acts, pre, {"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux})


# ---------------------------------------------------------------------------------------
# recipe
# ---------------------------------------------------------------------------------------
def _kron_options(
    d_sae: int, k: int | None, heads: int | None = None, m: int = 2, n: int = 4, composition: str = "mand"
) -> dict[str, Any]:
    """``heads``, ``m``, ``n`` (heads·m·n = d_sae; heads=None: d_sae/(m·n)), ``composition``."""
    shape = kron_shape(d_sae, heads, m, n)
    check_choice("composition", composition, COMPOSITIONS)
    return {"heads": shape.heads, "m": shape.m, "n": shape.n, "composition": composition}


register(
    Recipe(
        name="kron",
        training_class="kron",
        options=_kron_options,
        summary="KronSAE (arXiv 2505.22255): h heads of m×n pairs, mAND composition, global top-k; sparse path.",
    ),
    training={"kron": (KronTrainingSAE, KronTrainingSAEConfig)},
    inference={"kron": (KronSAE, KronSAEConfig)},
)
