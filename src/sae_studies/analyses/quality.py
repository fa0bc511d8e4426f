"""SAE quality: reconstruction and downstream CE, streamed over batches, accumulated in float64.

Definitions (every notebook quotes them next to the numbers):
- explained variance  EV = 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²): error over the total variance about
  the mean of x (not about zero, which older SAELens releases used and which inflates EV);
- FVU = 1 − EV, the fraction of variance unexplained;
- L0 = mean number of non-zero latents per token;
- feature density of latent i = fraction of tokens on which it is non-zero; a latent is dead
  when its density over the evaluation tokens is 0;
- CE loss: next-token cross-entropy (nats/token) of the LM with the hook's activation replaced;
  loss recovered = (CE_zero_ablation − CE_sae) / (CE_zero_ablation − CE_clean);
- KL = mean over tokens of KL(p_clean ‖ p_sae) between next-token distributions (nats);
- `keep_top_k(z, k)` keeps the k largest activations per row: applied to a TopK SAE trained at K
  it is "the TopK model cut to k latents".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import precision
from ..activations import check_hooks, parse_hook
from ..devices import device_of, to_device, to_numpy


@dataclass
class VarianceAccumulator:
    """Streams E‖x − x̂‖², E‖x‖² and E x in float64 to give explained variance exactly.

    The sums stay float64 tensors on the device of x̂ (x is moved there), so streaming many
    batches from a GPU costs no host synchronisation until a property is read."""

    sse: torch.Tensor | float = 0.0
    sum_sq: torch.Tensor | float = 0.0
    sum_x: torch.Tensor | None = None
    n: int = 0

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        x = x.to(x_hat.device)
        x64, err = x.double(), (x - x_hat).double()
        self.sse = self.sse + err.pow(2).sum()
        self.sum_sq = self.sum_sq + x64.pow(2).sum()
        s = x64.sum(0)
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.n += x.shape[0]

    @property
    def total_variance(self) -> float:
        """E‖x‖² − ‖E x‖² (summed over dimensions)."""
        mean = self.sum_x / self.n
        return float(self.sum_sq / self.n - mean.pow(2).sum())

    @property
    def explained_variance(self) -> float:
        return 1.0 - self.mse / self.total_variance

    @property
    def mse(self) -> float:
        """E‖x − x̂‖² (sum over dimensions, mean over tokens)."""
        return float(self.sse / self.n)


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
    device: torch.device | str | None = None,
) -> ReconstructionReport:
    """EV, FVU, MSE, L0, dead fraction and per-latent density over all given batches.

    `encode`/`decode` are passed separately so a caller can evaluate a modified SAE (top-k cut,
    ablated latents) without subclassing it. Each batch is moved to `device` (default: the device
    of `encode`'s SAE when it has one, see `devices.device_of`) and the counts accumulate there;
    the report holds floats and a numpy density.
    """
    device = device if device is not None else device_of(encode)
    acc = VarianceAccumulator()
    fires = torch.zeros(d_sae, dtype=torch.float64, device=device)
    for x in batches:
        x = to_device(x, device) if device is not None else x
        z = encode(x)
        acc.update(x, decode(z))
        fires = fires.to(z.device) + (z != 0).sum(0).double()
    density = to_numpy(fires / acc.n)
    ev = acc.explained_variance
    return ReconstructionReport(
        explained_variance=ev,
        fvu=1 - ev,
        mse=acc.mse,
        l0=float(fires.sum()) / acc.n,
        dead_fraction=float((density == 0).mean()),
        density=density,
    )


def sae_reconstruction_metrics(sae, x: torch.Tensor, batch_size: int = 4096) -> ReconstructionReport:
    """`reconstruction_metrics` for a SAELens SAE on a tensor of activations [n, d]."""
    return reconstruction_metrics(sae.encode, sae.decode, x.split(batch_size), sae.cfg.d_sae, device_of(sae))


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
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), tokens[:, 1:].reshape(-1), reduction="sum")


class Splicer:
    """Next-token CE (nats/token) of one LM on fixed contexts with one hook's activation replaced.

    Build one per (model, hook, contexts) and ask it for many replacements: the clean and the
    zero-ablation CE are computed once, and for `blocks.L.hook_resid_post` the residual stream at
    the hook is cached, so each replacement costs only the blocks after L (same numbers as
    splicing with a hook). Other hooks are spliced with `run_with_hooks`. The clean model's
    log-probabilities, which every KL needs, are cached too while they fit `logp_cache_mib` (float64:
    266 MiB for 16k tokens of a 2,048-token vocabulary, 1.5 GiB for 4k tokens of SmolLM2's 49k),
    giving the same numbers as recomputing them; each report then runs the LM once per batch, not twice.

    - `ce(replacements, kl=...)`: CE for each replacement; `replacements(a)` takes the hook's
      activation flattened to [tokens, d] and returns a dict of tensors of that shape (made one
      at a time if it is a lazy mapping). The result also holds "clean" and, for each key in
      `kl`, "kl:<key>" = mean over predicted tokens of KL(p_clean ‖ p_replaced) (nats);
    - `report(replace)`: a `SplicedReport` (CE clean / spliced / zero, KL, loss recovered).

    `keep_first` positions of every context (the BOS token of models that need one) are never
    replaced: replacements see and return only the other positions. CE is over every predicted
    token either way.

    `compute_dtype` (a resolved `sae_studies.precision` dtype, e.g. `LoadedModel.compute_dtype`):
    the LM forwards run under its autocast (bfloat16 matmuls, float32 weights); the activations
    handed to replacements are float32 and CE is summed in float64 either way.
    """

    def __init__(
        self,
        model,
        hook: str,
        contexts: np.ndarray,
        batch_size: int = 32,
        cache_mib: float = 512,
        keep_first: int = 0,
        compute_dtype: torch.dtype = torch.float32,
        logp_cache_mib: float = 2048,
    ):
        check_hooks(model, [hook])
        if contexts.ndim != 2 or contexts.shape[0] < 1 or contexts.shape[1] < 2:
            raise ValueError(f"contexts must be [n ≥ 1, n_ctx ≥ 2] token windows; got shape {list(contexts.shape)}")
        if not 0 <= keep_first < contexts.shape[1]:
            raise ValueError(f"keep_first must be in [0, {contexts.shape[1] - 1}]; got {keep_first}")
        self.model, self.hook, self.contexts, self.batch_size = model, hook, contexts, batch_size
        self.keep_first = keep_first
        self.compute_dtype = compute_dtype
        self.n_predicted = contexts.shape[0] * (contexts.shape[1] - 1)
        layer, kind = parse_hook(hook)
        self._layer = layer if kind == "resid" else None
        resid_mib = contexts.size * model.cfg.d_model * 4 / 2**20
        self._resid: dict[int, torch.Tensor] | None = {} if self._layer is not None and resid_mib <= cache_mib else None
        logp_mib = self.n_predicted * model.cfg.d_vocab_out * 8 / 2**20  # float64
        self._clean_logp: dict[int, torch.Tensor] | None = {} if logp_mib <= logp_cache_mib else None
        self._ce_clean: float | None = None
        self._ce_zero: float | None = None

    def _tokens(self, i: int) -> torch.Tensor:
        return torch.as_tensor(self.contexts[i : i + self.batch_size], dtype=torch.long, device=self.model.cfg.device)

    def _activation(self, i: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The hook's clean activation [B, P, d], and the clean logits if they came for free."""
        if self._layer is not None:
            if self._resid is not None and i in self._resid:
                return self._resid[i], None
            with self._autocast():
                resid = self.model(tokens, stop_at_layer=self._layer + 1).float()
            if self._resid is not None:
                self._resid[i] = resid
            return resid, None
        cache = {}

        def grab(a, hook):
            cache["a"] = a
            return a

        with self._autocast():
            logits = self.model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(self.hook, grab)])
        return cache["a"].float(), logits

    def _logits(self, tokens: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            if self._layer is not None:
                return self.model(activation, start_at_layer=self._layer + 1)
            return self.model.run_with_hooks(
                tokens, return_type="logits", fwd_hooks=[(self.hook, lambda a, hook: activation.reshape(a.shape).to(a.dtype))]
            )

    def _autocast(self):
        """The LM forward's precision (`compute_dtype`); replacements (SAEs) run outside it, in
        float32, and the CE sums in float64."""
        return precision.autocast(self.compute_dtype, self.model.cfg.device)

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
            clean_logp = self._clean_logp.get(i) if kl and self._clean_logp is not None else None
            if self._ce_clean is None or (kl and clean_logp is None):
                clean = self._logits(tokens, a) if clean is None else clean
                add("clean", _next_token_ce(clean, tokens).item())
                clean_logp = clean[:, :-1].double().log_softmax(-1)
                if kl and self._clean_logp is not None:
                    self._clean_logp[i] = clean_logp
            # one replacement at a time: logits are [batch, pos, vocab], never hold more than one
            kept, rest = a[:, : self.keep_first], a[:, self.keep_first :]
            for key, value in replacements(rest.reshape(-1, a.shape[-1])).items():
                value = value.to(device=a.device, dtype=a.dtype).reshape(rest.shape)  # SAEs may live elsewhere
                logits = self._logits(tokens, torch.cat([kept, value], 1) if self.keep_first else value)
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
    sae,
    eval_acts: torch.Tensor,
    splicer: Splicer,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Reconstruction metrics on eval activations plus CE / loss recovered / KL from `splicer`.

    `encode` replaces `sae.encode` (e.g. a top-k cut of the code); the SAE's decoder is kept.
    `eval_acts` may live anywhere (e.g. on the CPU, as read from disk): batches move to the SAE's
    device, and the LM's activations move to it and back inside the splicer."""
    encode = encode or sae.encode
    dev = device_of(sae)
    return {
        **reconstruction_metrics(encode, sae.decode, eval_acts.split(4096), sae.cfg.d_sae, dev).as_row(),
        **splicer.report(lambda a: sae.decode(encode(to_device(a, dev)))).as_row(),
    }


def keep_top_k(z: torch.Tensor, k: int) -> torch.Tensor:
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if k >= z.shape[-1]:
        return z
    values, indices = z.topk(k, dim=-1)
    return torch.zeros_like(z).scatter_(-1, indices, values)


class CutEncoder:
    """`sae.encode` followed by a top-k cut; `device` is the SAE's (see `devices.device_of`)."""

    def __init__(self, sae, k: int):
        self.sae, self.k = sae, k

    @property
    def device(self) -> torch.device | None:
        return device_of(self.sae)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return keep_top_k(self.sae.encode(x), self.k)


def cut_encoder(sae, k: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`sae.encode` followed by a top-k cut (no cut when k is None)."""
    if k is None:
        return sae.encode
    return CutEncoder(sae, k)


@torch.no_grad()
def encode_all(
    encode: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch_size: int = 4096,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Codes ``[n, F]`` of every row of `x`, on the CPU: each batch is encoded on `device`
    (default: the device of `encode`'s SAE, see `devices.device_of`)."""
    device = device if device is not None else device_of(encode)
    return torch.cat([encode(to_device(b, device) if device is not None else b).cpu() for b in x.split(batch_size)])
