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
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


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


@torch.no_grad()
def spliced_metrics(
    model, hook: str, replace: Callable[[torch.Tensor], torch.Tensor], contexts: np.ndarray, batch_size: int = 32
) -> SplicedReport:
    """CE of the LM with `replace(activation)` spliced in at `hook`, against clean and zero ablation."""
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl": 0.0}
    n = 0
    for i in tqdm(range(0, len(contexts), batch_size), desc=f"CE with splice at {hook}", leave=False):
        tokens = torch.as_tensor(contexts[i : i + batch_size], dtype=torch.long, device=model.cfg.device)
        clean = model(tokens, return_type="logits")
        spliced = model.run_with_hooks(
            tokens, return_type="logits", fwd_hooks=[(hook, lambda a, hook: replace(a.reshape(-1, a.shape[-1])).reshape(a.shape))]
        )
        zero = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, lambda a, hook: torch.zeros_like(a))])
        sums["clean"] += _next_token_ce(clean, tokens).item()
        sums["sae"] += _next_token_ce(spliced, tokens).item()
        sums["zero"] += _next_token_ce(zero, tokens).item()
        logp, logq = clean.double().log_softmax(-1), spliced.double().log_softmax(-1)
        sums["kl"] += (logp.exp() * (logp - logq)).sum(-1)[:, :-1].sum().item()
        n += tokens.shape[0] * (tokens.shape[1] - 1)
    return SplicedReport(ce_clean=sums["clean"] / n, ce_sae=sums["sae"] / n, ce_zero=sums["zero"] / n, kl=sums["kl"] / n)


def sae_spliced_metrics(model, sae, hook: str, contexts: np.ndarray, batch_size: int = 32) -> SplicedReport:
    return spliced_metrics(model, hook, lambda a: sae.decode(sae.encode(a)), contexts, batch_size)


def sae_report(model, sae, hook: str, eval_acts: torch.Tensor, contexts: np.ndarray) -> dict[str, float]:
    """Reconstruction metrics on eval activations plus CE / loss recovered / KL on contexts."""
    return {
        **sae_reconstruction_metrics(sae, eval_acts).as_row(),
        **sae_spliced_metrics(model, sae, hook, contexts).as_row(),
    }
