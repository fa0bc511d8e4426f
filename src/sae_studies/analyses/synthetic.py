"""A synthetic low-rank model of seed dependence: a generator with known features (study 2).

**The model.** Activations ``x ∈ R^d`` are a sparse sum of

* *isolated features*: fixed unit directions ``u_i``, each firing with probability
  ``p_isolated`` and a positive magnitude;
* *groups*: ``G`` orthonormal bases ``B_g`` (``[r, d]``) of r-dimensional subspaces. A group
  fires with probability ``p_group`` and emits ``a · cᵀ B_g`` with a positive magnitude ``a``
  and a unit direction ``c ∈ R^r`` drawn either from ``k`` directions spread evenly on the
  sphere (a tight frame: their second moment is isotropic, so no basis of the subspace is
  preferred) or, for ``directions=None``, uniformly from the sphere (rotation invariant);
* isotropic Gaussian noise of standard deviation ``noise_std`` per dimension.

Firing and magnitudes come from ``sae_lens.synthetic.ActivationGenerator`` (one generator
"feature" per isolated feature and one per group). Everything is seeded: the ground truth by
``spec.seed``, each streamed chunk by ``(spec.seed, stream, chunk index)``.

The metrics of how well SAEs identify these features are :mod:`.synthetic_recovery`'s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..activations import ActivationSet, _NpyWriter
from ..checks import check_choice, check_int, check_probability
from ..store import Store
from . import subspaces

#: The modules whose code builds this file's artifacts: their version is part of every key.
BUILDER_CODE = ("sae_studies.analyses.synthetic",)

#: Ground-truth layouts: all directions mutually orthogonal, or independently random.
LAYOUTS = ("orthogonal", "random")
#: Rows generated per chunk; part of the artifact key (the random draws depend on it).
CHUNK_ROWS = 65_536
STREAMS = {"train": 0, "eval": 1}
#: Bumped when the generator's draws change, so cached data is rebuilt.
GENERATOR_VERSION = 1


def _check_nonnegative(name: str, value: object, positive: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}; got {name}={value!r}")
    return float(value)


@dataclass(frozen=True)
class LowRankSpec:
    """Parameters of the synthetic model; validated on construction (see the module doc)."""

    d: int = 64
    n_isolated: int = 16
    n_groups: int = 4
    rank: int = 4
    """r, the dimension of each group's subspace: 1..d-1."""
    directions: int | None = None
    """k directions per group (k ≥ r; k ≤ 2 when r = 1), or None for the continuous variant."""
    p_isolated: float = 0.05
    p_group: float = 0.1
    magnitude_mean: float = 1.0
    magnitude_std: float = 0.25
    """Magnitudes are max(0, N(mean, std²)), as ActivationGenerator draws them."""
    noise_std: float = 0.02
    layout: str = "orthogonal"
    seed: int = 0

    def __post_init__(self) -> None:
        d = check_int("d", self.d, 2)
        check_int("n_isolated", self.n_isolated, 0)
        check_int("n_groups", self.n_groups, 0)
        if self.n_isolated + self.n_groups == 0:
            raise ValueError("n_isolated and n_groups are both 0: the model needs at least one feature")
        r = check_int("rank", self.rank, 1, d - 1, f" (a group spans a proper subspace of R^d, d={d})")
        if self.directions is not None:
            k = check_int("directions", self.directions, 1, hint=" or None (continuous)")
            if k < r or (r == 1 and k > 2):
                allowed = (
                    "1 or 2 (a line holds two unit directions)"
                    if r == 1
                    else f">= rank={r} (k directions must span the subspace)"
                )
                raise ValueError(f"directions must be {allowed}, or None (continuous); got directions={k}")
        check_probability("p_isolated", self.p_isolated)
        check_probability("p_group", self.p_group)
        _check_nonnegative("magnitude_mean", self.magnitude_mean, positive=True)
        _check_nonnegative("magnitude_std", self.magnitude_std)
        _check_nonnegative("noise_std", self.noise_std)
        check_choice("layout", self.layout, LAYOUTS)
        check_int("seed", self.seed, 0)
        if self.layout == "orthogonal" and self.n_gt_dims > d:
            raise ValueError(
                f"layout='orthogonal' needs n_isolated + n_groups × rank <= d; got {self.n_isolated} + "
                f"{self.n_groups} × {r} = {self.n_gt_dims} > d={d} (use layout='random' or fewer features)"
            )

    @property
    def n_gt_dims(self) -> int:
        """Dimensions the ground truth spans: one per isolated feature, r per group."""
        return self.n_isolated + self.n_groups * self.rank

    @property
    def n_gt_directions(self) -> int | None:
        """Distinct directions the model emits (None for the continuous variant)."""
        return None if self.directions is None else self.n_isolated + self.n_groups * self.directions

    def replace(self, **changes) -> LowRankSpec:
        return dataclasses.replace(self, **changes)


def spread_directions(k: int, r: int, generator: torch.Generator | None = None, steps: int = 400) -> Tensor:
    """``[k, r]`` unit vectors spread evenly on the sphere of ``R^r`` (float64).

    ``k = r``: the standard basis. ``r = 1``: ``+1`` (and ``-1``). ``r = 2``: the regular k-gon.
    ``r ≥ 3``: the minimiser of the Riesz energy ``Σ 1/‖v_i − v_j‖`` (Thomson problem; projected
    gradient descent from a seeded start), then made a tight frame (``VᵀV = (k/r) I``) by
    alternating a polar step and row normalisation, so no direction of the subspace is preferred.
    """
    k, r = check_int("k", k, 1), check_int("r", r, 1)
    if k < r or (r == 1 and k > 2):
        raise ValueError(f"k must be >= r (and <= 2 when r = 1); got k={k}, r={r}")
    if k == r:
        return torch.eye(r, dtype=torch.float64)
    if r == 1:
        return torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    if r == 2:
        t = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
        return torch.stack([t.cos(), t.sin()], 1)
    v = torch.randn(k, r, generator=generator, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    off = ~torch.eye(k, dtype=torch.bool)
    for step in range(steps):
        diff = v[:, None, :] - v[None, :, :]
        dist = diff.norm(dim=-1).masked_fill(~off, 1.0)
        force = (diff / dist[..., None] ** 3 * off[..., None]).sum(1)  # −∇ of the energy
        force = force - (force * v).sum(1, keepdim=True) * v  # tangent to the sphere
        v = v + 0.05 * (1 - step / steps) * force / force.norm(dim=1, keepdim=True).max().clamp_min(1e-12)
        v = v / v.norm(dim=1, keepdim=True)
    for _ in range(200):
        lam, vec = torch.linalg.eigh(v.T @ v)
        v = v @ (vec * lam.rsqrt()) @ vec.T * math.sqrt(k / r)
        v = v / v.norm(dim=1, keepdim=True)
    return v


@dataclass(frozen=True)
class GroundTruth:
    """The model's features: ``isolated`` ``[n_isolated, d]`` unit rows, ``bases`` ``[G, r, d]``
    orthonormal rows per group, ``frame`` ``[k, r]`` (None: continuous) in subspace coordinates."""

    isolated: Tensor
    bases: Tensor
    frame: Tensor | None

    @property
    def d(self) -> int:
        return int(self.bases.shape[2] if self.bases.numel() else self.isolated.shape[1])

    @property
    def directions(self) -> Tensor | None:
        """``[G, k, d]``: every direction a discrete group emits (None when continuous)."""
        return None if self.frame is None else torch.einsum("kr,grd->gkd", self.frame, self.bases)

    def subspaces(self) -> list[Tensor]:
        """Every ground-truth subspace (rows): isolated features first (1-d), then the groups."""
        return [u[None] for u in self.isolated] + list(self.bases)

    def to_numpy(self) -> dict[str, np.ndarray]:
        out = {"isolated": self.isolated.numpy(), "bases": self.bases.numpy()}
        return out if self.frame is None else {**out, "frame": self.frame.numpy()}


def ground_truth(spec: LowRankSpec) -> GroundTruth:
    """The features of ``spec``, drawn from ``spec.seed`` (float64)."""
    g = torch.Generator().manual_seed(spec.seed)
    d, n, G, r = spec.d, spec.n_isolated, spec.n_groups, spec.rank
    if spec.layout == "orthogonal":
        q = subspaces.random_subspace(spec.n_gt_dims, d, g, dtype=torch.float64)
        isolated, bases = q[:n], q[n:].reshape(G, r, d)
    else:
        isolated = torch.randn(n, d, generator=g, dtype=torch.float64)
        isolated = isolated / isolated.norm(dim=1, keepdim=True)
        bases = (
            torch.stack([subspaces.random_subspace(r, d, g, dtype=torch.float64) for _ in range(G)])
            if G
            else torch.zeros(0, r, d, dtype=torch.float64)
        )
    frame = None if spec.directions is None else spread_directions(spec.directions, r, g)
    return GroundTruth(isolated.contiguous(), bases.contiguous(), frame)


def _chunk_seed(spec: LowRankSpec, stream: int, chunk: int) -> int:
    return int(np.random.SeedSequence([spec.seed, stream, chunk]).generate_state(1, np.uint64)[0] >> 1)


class LowRankModel:
    """Draws activations from ``spec``; firing and magnitudes through SAELens' ActivationGenerator."""

    def __init__(self, spec: LowRankSpec):
        from sae_lens.synthetic import ActivationGenerator

        self.spec = spec
        self.truth = ground_truth(spec)
        p = [spec.p_isolated] * spec.n_isolated + [spec.p_group] * spec.n_groups
        self.generator = ActivationGenerator(
            len(p),
            torch.tensor(p),
            std_firing_magnitudes=spec.magnitude_std,
            mean_firing_magnitudes=spec.magnitude_mean,
        )

    def sample(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``(x [n, d] float32, codes [n, n_isolated + G])``: activations and the magnitude of each
        isolated feature and group (0 when silent). The global torch RNG is left untouched."""
        s, t = self.spec, self.truth
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            codes = self.generator.sample(n).double()
            x = codes[:, : s.n_isolated] @ t.isolated
            if s.n_groups:
                if t.frame is None:
                    c = torch.randn(n, s.n_groups, s.rank, dtype=torch.float64)
                    c = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                else:
                    c = t.frame[torch.randint(t.frame.shape[0], (n, s.n_groups))]
                coords = codes[:, s.n_isolated :, None] * c  # [n, G, r]
                x = x + coords.reshape(n, -1) @ t.bases.reshape(-1, s.d)
            if s.noise_std:
                x = x + s.noise_std * torch.randn(n, s.d, dtype=torch.float64)
        return x.float(), codes.float()

    def stream(self, n_rows: int, stream: str = "train") -> Iterator[Tensor]:
        """``[≤ CHUNK_ROWS, d]`` float32 chunks, ``n_rows`` in all; the same rows for any consumer."""
        check_choice("stream", stream, list(STREAMS))
        for i, start in enumerate(range(0, check_int("n_rows", n_rows, 1), CHUNK_ROWS)):
            yield self.sample(min(CHUNK_ROWS, n_rows - start), _chunk_seed(self.spec, STREAMS[stream], i))[0]


@dataclass(frozen=True)
class SyntheticActivations(ActivationSet):
    """Generated activations on disk in the harvested layout (``acts.npy``), so that
    ``train.train_sae`` consumes them unchanged. There are no tokens, categories or contexts."""

    spec: LowRankSpec

    def _no(self, what: str):
        raise AttributeError(f"synthetic activations ({self.hook}) have no {what}: they come from no language model")

    tokens = property(lambda self: self._no("tokens"))  # type: ignore[assignment]
    categories = property(lambda self: self._no("categories"))  # type: ignore[assignment]
    n_ctx = property(lambda self: self._no("n_ctx"))  # type: ignore[assignment]

    @cached_property
    def truth(self) -> GroundTruth:
        z = np.load(self.artifact.path / "ground_truth.npz")
        frame = torch.from_numpy(z["frame"]) if "frame" in z else None
        return GroundTruth(torch.from_numpy(z["isolated"]), torch.from_numpy(z["bases"]), frame)


def materialise(spec: LowRankSpec, n_rows: int, store: Store, stream: str = "train") -> SyntheticActivations:
    """The first ``n_rows`` rows of ``stream`` as a cached artifact (``acts.npy`` written chunk by
    chunk, so memory holds one chunk), with the ground truth beside it (``ground_truth.npz``)."""
    n_rows = check_int("n_rows", n_rows, 1)
    check_choice("stream", stream, list(STREAMS))
    params = {
        "spec": dataclasses.asdict(spec),
        "n_rows": n_rows,
        "stream": stream,
        "chunk_rows": CHUNK_ROWS,
        "version": GENERATOR_VERSION,
    }

    def build(tmp):
        model = LowRankModel(spec)
        out = _NpyWriter(tmp / "acts.npy", (n_rows, spec.d))
        sq = 0.0
        for chunk in tqdm(model.stream(n_rows, stream), total=-(-n_rows // CHUNK_ROWS), desc=f"generating {stream}"):
            out.append(chunk.numpy())
            sq += float(chunk.double().norm(dim=1).sum())
        out.close()
        np.savez(tmp / "ground_truth.npz", **model.truth.to_numpy())
        return {"d": spec.d, "mean_norm": sq / n_rows}

    art = store.get_or_build("synthetic", params, build, code=BUILDER_CODE)
    return SyntheticActivations(f"synthetic/{stream}", art, spec)
