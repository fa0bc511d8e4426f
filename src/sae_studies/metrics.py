"""SAE quality metrics, streamed over batches and accumulated in float64.

Definitions (every notebook quotes them next to the numbers):
- explained variance  EV = 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²): error over the total variance about
  the mean of x (not about zero, which older SAELens releases used and which inflates EV);
- FVU = 1 − EV, the fraction of variance unexplained;
- L0 = mean number of non-zero latents per token;
- feature density of latent i = fraction of tokens on which it is non-zero; a latent is dead
  when its density over the evaluation tokens is 0;
- CE loss: next-token cross-entropy (nats/token) of the LM with the hook's activation replaced;
  loss recovered = (CE_zero_ablation − CE_sae) / (CE_zero_ablation − CE_clean);
- KL = mean over tokens of KL(p_clean ‖ p_sae) between next-token distributions (nats).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .activations import check_hooks


@dataclass
class VarianceAccumulator:
    """Streams E‖x − x̂‖², E‖x‖² and E x in float64 to give explained variance exactly."""

    sse: float = 0.0
    sum_sq: float = 0.0
    sum_x: torch.Tensor | None = None
    n: int = 0

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        x64, err = x.double(), (x - x_hat).double()
        self.sse += err.pow(2).sum().item()
        self.sum_sq += x64.pow(2).sum().item()
        s = x64.sum(0)
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.n += x.shape[0]

    @property
    def total_variance(self) -> float:
        """E‖x‖² − ‖E x‖² (summed over dimensions)."""
        mean = self.sum_x / self.n
        return self.sum_sq / self.n - mean.pow(2).sum().item()

    @property
    def explained_variance(self) -> float:
        return 1.0 - (self.sse / self.n) / self.total_variance

    @property
    def mse(self) -> float:
        """E‖x − x̂‖² (sum over dimensions, mean over tokens)."""
        return self.sse / self.n


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    acc = VarianceAccumulator()
    acc.update(x, x_hat)
    return acc.explained_variance


@dataclass
class ReconstructionReport:
    explained_variance: float
    fvu: float
    mse: float
    l0: float
    dead_fraction: float
    density: np.ndarray = field(repr=False)
    """Per-latent firing frequency over the evaluation tokens."""

    def as_row(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if k != "density"}


@torch.no_grad()
def reconstruction_metrics(
    encode: Callable[[torch.Tensor], torch.Tensor],
    decode: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    d_sae: int,
) -> ReconstructionReport:
    """EV, FVU, MSE, L0, dead fraction and per-latent density over all given batches.

    `encode`/`decode` are passed separately so a caller can evaluate a modified SAE (top-k cut,
    ablated latents) without subclassing it.
    """
    acc = VarianceAccumulator()
    fires = torch.zeros(d_sae, dtype=torch.float64)
    l0_sum = 0.0
    for x in batches:
        z = encode(x)
        acc.update(x, decode(z))
        active = z != 0
        fires += active.sum(0).double()
        l0_sum += active.sum().item()
    density = (fires / acc.n).numpy()
    ev = acc.explained_variance
    return ReconstructionReport(
        explained_variance=ev, fvu=1 - ev, mse=acc.mse, l0=l0_sum / acc.n,
        dead_fraction=float((density == 0).mean()), density=density,
    )


def sae_reconstruction_metrics(sae, x: torch.Tensor, batch_size: int = 4096) -> ReconstructionReport:
    """`reconstruction_metrics` for a SAELens SAE on a tensor of activations [n, d]."""
    return reconstruction_metrics(sae.encode, sae.decode, x.split(batch_size), sae.cfg.d_sae)


@dataclass
class SplicedReport:
    ce_clean: float
    ce_sae: float
    ce_zero: float
    kl: float

    @property
    def loss_recovered(self) -> float:
        return (self.ce_zero - self.ce_sae) / (self.ce_zero - self.ce_clean)

    def as_row(self) -> dict[str, float]:
        return {**self.__dict__, "loss_recovered": self.loss_recovered}


def _next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).double(), tokens[:, 1:].reshape(-1), reduction="sum"
    )


def _resid_layer(hook: str) -> int | None:
    parts = hook.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] == "hook_resid_post":
        return int(parts[1])
    return None


class Splicer:
    """Next-token CE (nats/token) of one LM on fixed contexts with one hook's activation replaced.

    Build one per (model, hook, contexts) and ask it for many replacements: the clean and the
    zero-ablation CE are computed once, and for `blocks.L.hook_resid_post` the residual stream at
    the hook is cached, so each replacement costs only the blocks after L (same numbers as
    splicing with a hook). Other hooks are spliced with `run_with_hooks`.

    - `ce(replacements, kl=...)`: CE for each replacement; `replacements(a)` takes the hook's
      activation flattened to [tokens, d] and returns a dict of tensors of that shape (made one
      at a time if it is a lazy mapping). The result also holds "clean" and, for each key in
      `kl`, "kl:<key>" = mean over predicted tokens of KL(p_clean ‖ p_replaced) (nats);
    - `report(replace)`: a `SplicedReport` (CE clean / spliced / zero, KL, loss recovered).
    """

    def __init__(self, model, hook: str, contexts: np.ndarray, batch_size: int = 32, cache_mib: float = 512):
        check_hooks(model, [hook])
        if contexts.ndim != 2 or contexts.shape[0] < 1 or contexts.shape[1] < 2:
            raise ValueError(f"contexts must be [n ≥ 1, n_ctx ≥ 2] token windows; got shape {list(contexts.shape)}")
        self.model, self.hook, self.contexts, self.batch_size = model, hook, contexts, batch_size
        self.n_predicted = contexts.shape[0] * (contexts.shape[1] - 1)
        self._layer = _resid_layer(hook)
        resid_mib = contexts.size * model.cfg.d_model * 4 / 2**20
        self._resid: dict[int, torch.Tensor] | None = {} if self._layer is not None and resid_mib <= cache_mib else None
        self._ce_clean: float | None = None
        self._ce_zero: float | None = None

    def _tokens(self, i: int) -> torch.Tensor:
        return torch.as_tensor(self.contexts[i : i + self.batch_size], dtype=torch.long, device=self.model.cfg.device)

    def _activation(self, i: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The hook's clean activation [B, P, d], and the clean logits if they came for free."""
        if self._layer is not None:
            if self._resid is not None and i in self._resid:
                return self._resid[i], None
            resid = self.model(tokens, stop_at_layer=self._layer + 1)
            if self._resid is not None:
                self._resid[i] = resid
            return resid, None
        cache = {}

        def grab(a, hook):
            cache["a"] = a
            return a

        logits = self.model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(self.hook, grab)])
        return cache["a"], logits

    def _logits(self, tokens: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        if self._layer is not None:
            return self.model(activation, start_at_layer=self._layer + 1)
        return self.model.run_with_hooks(
            tokens, return_type="logits", fwd_hooks=[(self.hook, lambda a, hook: activation.reshape(a.shape))]
        )

    @torch.no_grad()
    def ce(
        self,
        replacements: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        kl: Iterable[str] = (),
        desc: str | None = None,
    ) -> dict[str, float]:
        kl = set(kl)
        sums: dict[str, float] = {}

        def add(key, value):
            sums[key] = sums.get(key, 0.0) + value

        for i in tqdm(range(0, len(self.contexts), self.batch_size), desc=desc or f"spliced CE at {self.hook}", leave=False):
            tokens = self._tokens(i)
            a, clean = self._activation(i, tokens)
            clean_logp = None
            if self._ce_clean is None or kl:
                clean = self._logits(tokens, a) if clean is None else clean
                add("clean", _next_token_ce(clean, tokens).item())
                clean_logp = clean[:, :-1].double().log_softmax(-1)
            # one replacement at a time: logits are [batch, pos, vocab], never hold more than one
            for key, value in replacements(a.reshape(-1, a.shape[-1])).items():
                logits = self._logits(tokens, value.reshape(a.shape))
                add(key, _next_token_ce(logits, tokens).item())
                if key in kl:
                    logq = logits[:, :-1].double().log_softmax(-1)
                    add(f"kl:{key}", (clean_logp.exp() * (clean_logp - logq)).sum().item())
        out = {key: total / self.n_predicted for key, total in sums.items()}
        if "clean" in out:
            self._ce_clean = out["clean"]
        out["clean"] = self._ce_clean
        return out

    @property
    def ce_zero(self) -> float:
        """CE with the hook's activation zeroed (the floor of loss recovered)."""
        if self._ce_zero is None:
            self._ce_zero = self.ce(lambda a: {"zero": torch.zeros_like(a)}, desc=f"zero-ablation CE at {self.hook}")["zero"]
        return self._ce_zero

    def report(self, replace: Callable[[torch.Tensor], torch.Tensor], desc: str | None = None) -> SplicedReport:
        out = self.ce(lambda a: {"spliced": replace(a)}, kl=("spliced",), desc=desc)
        return SplicedReport(ce_clean=out["clean"], ce_sae=out["spliced"], ce_zero=self.ce_zero, kl=out["kl:spliced"])


def sae_report(
    sae, eval_acts: torch.Tensor, splicer: Splicer,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Reconstruction metrics on eval activations plus CE / loss recovered / KL from `splicer`.

    `encode` replaces `sae.encode` (e.g. a top-k cut of the code); the SAE's decoder is kept."""
    encode = encode or sae.encode
    return {
        **reconstruction_metrics(encode, sae.decode, eval_acts.split(4096), sae.cfg.d_sae).as_row(),
        **splicer.report(lambda a: sae.decode(encode(a))).as_row(),
    }


# --------------------------------------------------------------------------------------------
# per-feature statistics (study 1): contributions, ablations, top activations, explanations
# --------------------------------------------------------------------------------------------
#
# Definitions:
# - contribution direction u_i = decode(e_i) − decode(0): what latent i adds to the reconstruction
#   per unit of activation (SAELens decoders are affine in the latents; checked at run time);
# - ablating a set A of latents from the reconstruction: x̂_A = x̂ − Σ_{i∈A} z_i u_i (no re-encoding);
# - marginal FVU of latent i: FVU(x̂_{i}) − FVU(x̂), exactly
#   (Σ_t 2 z_ti ⟨e_t, u_i⟩ + z_ti² ‖u_i‖²) / (n · total variance), e = x − x̂;
# - CE increase of an ablation: CE with x̂_A spliced in − CE with x̂ spliced in (nats/token);
# - token entropy of a latent: entropy (bits) of the current token over its top activations;
#   single-token share: share of those top activations on its most common current token.

@torch.no_grad()
def feature_contributions(sae) -> torch.Tensor:
    """[F, d] contribution directions u_i = decode(e_i) − decode(0) of a SAELens SAE."""
    f = sae.cfg.d_sae
    dtype = sae.W_dec.dtype
    zero = sae.decode(torch.zeros(1, f, dtype=dtype, device=sae.W_dec.device))
    u = sae.decode(torch.eye(f, dtype=dtype, device=sae.W_dec.device)) - zero
    probe = torch.zeros(1, f, dtype=dtype, device=sae.W_dec.device)
    probe[0, : min(f, 3)] = torch.tensor([2.0, -0.5, 1.5][: min(f, 3)], dtype=dtype)
    expected = zero + probe @ u
    if not torch.allclose(sae.decode(probe), expected, rtol=1e-4, atol=1e-4 * float(u.abs().max())):
        raise ValueError(f"{type(sae).__name__}.decode is not affine in the latents; ablations need an affine decoder")
    return u


@torch.no_grad()
def ablation_explained_variance(
    sae, x: torch.Tensor, ablate: dict[str, torch.Tensor], batch_size: int = 4096
) -> dict[str, float]:
    """Explained variance of the reconstruction with each named set of latents ablated.

    `ablate` maps a name to a boolean mask [F] of latents removed from x̂ (no re-encoding); the
    entry `"none"` (nothing ablated) is always added. EV about the mean, float64 (see module doc).
    """
    f = sae.cfg.d_sae
    masks = {"none": torch.zeros(f, dtype=torch.bool), **ablate}
    for name, m in masks.items():
        if m.shape != (f,) or m.dtype != torch.bool:
            raise ValueError(f"ablate[{name!r}] must be a boolean mask of shape [{f}]; got {m.dtype} {list(m.shape)}")
    accs = {name: VarianceAccumulator() for name in masks}
    for xb in x.split(batch_size):
        z = sae.encode(xb)
        for name, m in masks.items():
            accs[name].update(xb, sae.decode(z * (~m).to(z.dtype)))
    return {name: acc.explained_variance for name, acc in accs.items()}


@torch.no_grad()
def marginal_fvu(sae, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """[F] exact increase in FVU when latent i alone is ablated from the reconstruction."""
    u = feature_contributions(sae).double()
    u_sq = u.pow(2).sum(-1)
    acc = VarianceAccumulator()
    dsse = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    for xb in x.split(batch_size):
        z = sae.encode(xb)
        x_hat = sae.decode(z)
        acc.update(xb, x_hat)
        z64, e = z.double(), (xb - x_hat).double()
        dsse += 2 * (z64 * (e @ u.T)).sum(0) + z64.pow(2).sum(0) * u_sq
    return (dsse / acc.n / acc.total_variance).numpy()


@torch.no_grad()
def ablation_ce(splicer: Splicer, sae, ablate: dict[str, torch.Tensor]) -> dict[str, float]:
    """CE (nats/token) with the SAE reconstruction spliced in ("sae"), with each named latent set
    ablated from it (boolean masks [F]), and clean ("clean")."""
    f = sae.cfg.d_sae
    keeps = {}
    for name, m in ablate.items():
        if m.shape != (f,) or m.dtype != torch.bool:
            raise ValueError(f"ablate[{name!r}] must be a boolean mask of shape [{f}]; got {m.dtype} {list(m.shape)}")
        keeps[name] = (~m).float()

    def reps(a):
        z = sae.encode(a)
        return {"sae": sae.decode(z), **{name: sae.decode(z * k.to(z.dtype)) for name, k in keeps.items()}}

    return splicer.ce(reps, desc=f"ablation CE at {splicer.hook}")


@torch.no_grad()
def marginal_ce(splicer: Splicer, sae, features: np.ndarray) -> pd.DataFrame:
    """Single-latent ablation effects on the LM: one row per latent in `features` with
    `delta_ce` (CE with latent i ablated from x̂ − CE with x̂, nats per predicted token, over all
    tokens of `contexts`), `firings` (tokens where it is non-zero) and `delta_ce_per_firing`
    (the same increase summed over tokens, divided by its firings; NaN if it never fires)."""
    features = np.asarray(features, dtype=np.int64)
    u = feature_contributions(sae)
    fires = np.zeros(len(features))

    class _Lazy(dict):
        """Replacement tensors made one at a time (a dict of them all would hold F × [tokens, d])."""

        def __init__(self, x_hat, zf):
            super().__init__()
            self.x_hat, self.zf = x_hat, zf

        def items(self):
            yield "sae", self.x_hat
            for j, f in enumerate(features):
                yield int(f), self.x_hat - self.zf[:, j : j + 1] * u[f]

    def reps(a):
        z = sae.encode(a)
        x_hat = sae.decode(z)
        zf = z[:, features]
        fires[:] += (zf != 0).sum(0).numpy()
        return _Lazy(x_hat, zf)

    ce = splicer.ce(reps, desc=f"single-latent CE at {splicer.hook}")
    n_pred = splicer.n_predicted
    delta = np.array([ce[int(f)] - ce["sae"] for f in features])
    with np.errstate(invalid="ignore", divide="ignore"):
        per_fire = np.where(fires > 0, delta * n_pred / fires, np.nan)
    return pd.DataFrame({"feature": features, "delta_ce": delta, "firings": fires, "delta_ce_per_firing": per_fire})


@dataclass
class TopActivations:
    """Per-latent firing frequency and its `n` largest activations over a token set."""

    density: np.ndarray
    """[F] share of tokens on which the latent is non-zero."""
    values: torch.Tensor
    """[F, n] largest activations, descending (0 where the latent fired on fewer than n tokens)."""
    rows: torch.Tensor
    """[F, n] int64 token rows of those activations (-1 where value is 0)."""
    n_tokens: int


@torch.no_grad()
def top_activations(source, x: torch.Tensor, n: int, batch_size: int = 4096) -> TopActivations:
    """Stream `x` [tokens, d] through an encoder and keep each latent's top-n activating rows.

    `source` is a SAELens SAE (its `encode`) or any function from activations to codes (a top-k
    cut, a HierarchicalTopK at some k, or the identity on precomputed codes)."""
    if n < 1:
        raise ValueError(f"n (top activations per latent) must be ≥ 1; got {n}")
    if len(x) == 0:
        raise ValueError("no activations to rank (x has 0 rows)")
    encode = source.encode if hasattr(source, "encode") else source
    vals = rows = fires = None
    offset = 0
    for xb in x.split(batch_size):
        z = encode(xb).float()
        if vals is None:
            f = z.shape[1]
            vals, rows = torch.zeros(f, 0), torch.zeros(f, 0, dtype=torch.long)
            fires = torch.zeros(f, dtype=torch.float64)
        fires += (z != 0).sum(0).double()
        kk = min(n, z.shape[0])
        v, r = z.topk(kk, dim=0)  # [kk, F]
        cand_v = torch.cat([vals, v.T], 1)
        cand_r = torch.cat([rows, r.T + offset], 1)
        top_v, pos = cand_v.topk(min(n, cand_v.shape[1]), dim=1)
        vals, rows = top_v, cand_r.gather(1, pos)
        offset += xb.shape[0]
    rows = torch.where(vals > 0, rows, torch.full_like(rows, -1))
    vals = vals.clamp_min(0)
    return TopActivations(density=(fires / offset).numpy(), values=vals, rows=rows, n_tokens=offset)


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns the −0.0 of a single token into 0.0


def ngram_at(tokens: np.ndarray, row: int, n: int, n_ctx: int) -> tuple[int, ...] | None:
    """The n tokens ending at `row` (the current token last), None if they cross a context start."""
    if row % n_ctx < n - 1:
        return None
    return tuple(int(t) for t in tokens[row - n + 1 : row + 1])


def surface_statistics(top: TopActivations, tokens: np.ndarray, n_ctx: int, min_firings: int = 8) -> pd.DataFrame:
    """Per latent: `density`, `n_top` (top activations used), `token_entropy` (bits, current token
    over the top activations), `single_token_share` (share on the most common token), `top_token`
    and `bigram_share` (share on the most common (previous, current) pair). Latents with fewer than
    `min_firings` top activations get NaN statistics: a handful of firings says nothing."""
    out = []
    for i in range(top.rows.shape[0]):
        r = top.rows[i][top.rows[i] >= 0].numpy()
        row = {"feature": i, "density": float(top.density[i]), "n_top": len(r)}
        if len(r) >= min_firings:
            toks = tokens[r]
            uniq, counts = np.unique(toks, return_counts=True)
            bigrams = [ngram_at(tokens, x, 2, n_ctx) for x in r]
            bigrams = [b for b in bigrams if b is not None]
            _, bc = np.unique(np.array(bigrams), axis=0, return_counts=True) if bigrams else (None, np.array([0]))
            row.update(token_entropy=_entropy_bits(counts), single_token_share=counts.max() / len(r),
                       top_token=int(uniq[counts.argmax()]), bigram_share=bc.max() / len(r))
        else:
            row.update(token_entropy=np.nan, single_token_share=np.nan, top_token=-1, bigram_share=np.nan)
        out.append(row)
    return pd.DataFrame(out)


def explain_feature(
    rows: np.ndarray, tokens: np.ndarray, n_ctx: int, token_str: Callable[[int], str], n_show: int = 3, max_n: int = 3
) -> dict:
    """An offline explanation from a latent's top activating rows: the most common current tokens
    and the most common n-grams ending at the current token (n = 2..max_n), each with its share of
    the top activations. `text` is a one-line summary, e.g. `'"Murphy" 62% | "'s Law" 40%'`."""
    rows = np.asarray(rows)
    rows = rows[rows >= 0]
    if len(rows) == 0:
        return {"n": 0, "tokens": [], "ngrams": [], "text": "(never fires)"}
    uniq, counts = np.unique(tokens[rows], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:n_show]
    top_tokens = [(token_str(int(uniq[j])), counts[j] / len(rows)) for j in order]
    grams = []
    for n in range(2, max_n + 1):
        gs = [ngram_at(tokens, r, n, n_ctx) for r in rows]
        gs = [g for g in gs if g is not None]
        if not gs:
            continue
        u, c = np.unique(np.array(gs), axis=0, return_counts=True)
        j = int(c.argmax())
        grams.append(("".join(token_str(int(t)) for t in u[j]), c[j] / len(rows)))
    text = " · ".join(f"{s!r} {p:.0%}" for s, p in top_tokens)
    if grams:
        best = max(grams, key=lambda g: g[1])
        text += f" | {best[0]!r} {best[1]:.0%}"
    return {"n": len(rows), "tokens": top_tokens, "ngrams": grams, "text": text}
