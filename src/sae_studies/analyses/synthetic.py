"""A synthetic low-rank model of seed dependence: a generator with known features, and metrics
of how well SAEs identify them (study 2).

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

**Metrics** (decoders are SAELens ``W_dec`` ``[F, d]``; a latent is its unit decoder row ŵ):

* isolated recovery: ``max_j <u_i, ŵ_j>`` per isolated feature;
* assignment: latent j belongs to the ground-truth subspace holding most of its energy —
  ``max(<u_i, ŵ_j>, 0)²`` for isolated feature i, ``‖B_g ŵ_j‖²`` for group g — if that share is
  at least ``min_energy`` (0.5 by default: "most of its energy"); else it is unassigned;
* group span: the top-r singular subspace of the unit rows assigned to the group
  (:func:`subspaces.top_subspace`; all of them if fewer than r); its principal-angle cosines to
  ``B_g`` (missing dimensions count as cosine 0) and to the same group's span in another seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..activations import ActivationSet, _NpyWriter
from ..checks import check_choice, check_int, check_probability, check_unit_interval
from ..store import Store
from . import cosine, subspaces

#: The modules whose code builds this file's artifacts: their version is part of every key.
BUILDER_CODE = ("sae_studies.analyses.synthetic",)

#: Ground-truth layouts: all directions mutually orthogonal, or independently random.
LAYOUTS = ("orthogonal", "random")
#: Rows generated per chunk; part of the artifact key (the random draws depend on it).
CHUNK_ROWS = 65_536
STREAMS = {"train": 0, "eval": 1}
#: Bumped when the generator's draws change, so cached data is rebuilt.
GENERATOR_VERSION = 1
#: Owner of a latent that hardly fires (see :func:`assign_latents`).
DEAD = -2


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


# --------------------------------------------------------------------------------------------
# identifiability metrics
# --------------------------------------------------------------------------------------------


def _unit(w: Tensor) -> Tensor:
    return cosine.unit_rows(w.detach().cpu(), torch.float64)


def isolated_recovery(decoder: Tensor, truth: GroundTruth) -> Tensor:
    """``[n_isolated]``: best cosine of each isolated feature to any latent, ``max_j <u_i, ŵ_j>``."""
    return cosine.best_cosine(truth.isolated, _unit(decoder))[0]


def direction_recovery(decoder: Tensor, truth: GroundTruth) -> Tensor | None:
    """``[G, k]``: best cosine of each direction of a discrete group to any latent (None if continuous)."""
    dirs = truth.directions
    if dirs is None or dirs.numel() == 0:
        return None
    return cosine.best_cosine(dirs.reshape(-1, dirs.shape[-1]), _unit(decoder))[0].reshape(dirs.shape[:2])


@dataclass(frozen=True)
class Assignment:
    """Which ground-truth subspace each latent belongs to (see the module doc).

    ``owner[j]``: ``i`` in ``0..n_isolated-1`` for isolated feature i, ``n_isolated + g`` for group
    g, ``-1`` unassigned, ``DEAD`` (-2) for a latent that hardly fires; ``energy[j]``: the share of
    ŵ_j's energy in the subspace that holds most of it."""

    owner: np.ndarray
    energy: np.ndarray
    n_isolated: int

    @property
    def kind(self) -> np.ndarray:
        """``"isolated"``, ``"group"``, ``"none"`` (no subspace holds most of its energy) or
        ``"dead"`` (fired fewer than ``min_firings`` times) per latent."""
        out = np.full(self.owner.shape, "none", dtype=object)
        out[(self.owner >= 0) & (self.owner < self.n_isolated)] = "isolated"
        out[self.owner >= self.n_isolated] = "group"
        out[self.owner == DEAD] = "dead"
        return out

    def group_mask(self, g: int) -> np.ndarray:
        return self.owner == self.n_isolated + g


def assign_latents(
    decoder: Tensor, truth: GroundTruth, min_energy: float = 0.5, firings: np.ndarray | None = None, min_firings: int = 1
) -> Assignment:
    """Assign each latent to the ground-truth subspace with most of its energy (≥ ``min_energy``).

    With ``firings`` (times each latent fired on held-out rows), latents that fired fewer than
    ``min_firings`` times are dead (``DEAD``) whatever their direction: a latent that never
    learned cannot be recovered or unstable (as in study 1's classes)."""
    min_energy = check_unit_interval("min_energy", min_energy)
    w = _unit(decoder)
    parts = [(w @ truth.isolated.T).clamp_min(0).pow(2)]  # signed: −u_i is not feature i
    if truth.bases.numel():
        parts.append(torch.einsum("fd,grd->fgr", w, truth.bases).pow(2).sum(-1))
    energy = torch.cat(parts, 1)
    best, owner = energy.max(1)
    owner = torch.where(best >= min_energy, owner, torch.full_like(owner, -1)).numpy()
    if firings is not None:
        firings = np.asarray(firings)
        if firings.shape != owner.shape:
            raise ValueError(f"firings must hold one count per latent, shape {owner.shape}; got {firings.shape}")
        owner = np.where(firings < check_int("min_firings", min_firings, 0), DEAD, owner)
    return Assignment(owner, best.numpy(), truth.isolated.shape[0])


def group_span(decoder: Tensor, assignment: Assignment, g: int, r: int) -> Tensor | None:
    """Orthonormal rows spanning group g's latents: their top-r singular subspace (all of them
    when fewer than r); None when none is assigned."""
    rows = _unit(decoder)[torch.from_numpy(assignment.group_mask(g))]
    if rows.shape[0] == 0:
        return None
    return subspaces.top_subspace(rows, min(r, rows.shape[0]))


def padded_cosines(a: Tensor | None, b: Tensor | None, r: int) -> np.ndarray:
    """``[r]`` principal-angle cosines between two row spaces, descending, padded with 0 (a
    missing dimension is orthogonal to everything)."""
    out = np.zeros(r)
    if a is not None and b is not None:
        c = np.sort(np.cos(subspaces.principal_angles(a, b).numpy()))[::-1][:r]
        out[: c.size] = np.clip(c, 0, 1)
    return out


def subspace_recovery(decoder: Tensor, truth: GroundTruth, assignment: Assignment) -> np.ndarray:
    """``[G, r]``: principal-angle cosines between each group's true subspace and its latents' span."""
    G, r = truth.bases.shape[:2]
    return (
        np.stack([padded_cosines(group_span(decoder, assignment, g, r), truth.bases[g], r) for g in range(G)])
        if G
        else np.zeros((0, r))
    )


def cross_seed_span_agreement(decoders: list[Tensor], truth: GroundTruth, assignments: list[Assignment]) -> np.ndarray:
    """``[S(S-1)/2, G, r]``: principal-angle cosines between the spans of each group's latents in
    every pair of seeds."""
    G, r = truth.bases.shape[:2]
    spans = [[group_span(w, a, g, r) for g in range(G)] for w, a in zip(decoders, assignments)]
    pairs = itertools.combinations(range(len(decoders)), 2)
    return np.stack([np.stack([padded_cosines(spans[s][g], spans[t][g], r) for g in range(G)]) for s, t in pairs])


def random_subspace_cosines(r: int, d: int, n_draws: int, generator: torch.Generator | None = None) -> np.ndarray:
    """``[n_draws, r]``: principal-angle cosines between two uniformly random r-dim subspaces of R^d."""
    draws = [
        padded_cosines(
            subspaces.random_subspace(r, d, generator, dtype=torch.float64),
            subspaces.random_subspace(r, d, generator, dtype=torch.float64),
            r,
        )
        for _ in range(n_draws)
    ]
    return np.stack(draws)


def within_subspace_null(
    truth: GroundTruth, per_group: list[int], n_seeds: int, tau: float, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Cross-seed stability of latents placed at random *inside* the right subspaces: each seed
    draws ``per_group[g]`` directions uniformly on the unit sphere of group g's subspace.

    The chance level of group latents that found their subspace but no preferred basis in it;
    returns :func:`seed_stability.null_stability`'s numbers."""
    from .seed_stability import null_stability

    if len(per_group) != truth.bases.shape[0] or sum(per_group) < 1:
        raise ValueError(
            f"per_group must give a count for each of the {truth.bases.shape[0]} groups, at least one > 0; got {per_group}"
        )
    r = truth.bases.shape[1]
    decs = []
    for _ in range(check_int("n_seeds", n_seeds, 2)):
        rows = [
            torch.randn(m, r, generator=generator, dtype=torch.float64) @ truth.bases[g] for g, m in enumerate(per_group) if m
        ]
        decs.append(torch.cat(rows).float())
    return null_stability(decs, tau)


def mcc_over_truth(truth_dirs: Tensor, learned: Tensor) -> float:
    """The standard mean correlation coefficient over the ground truth: Hungarian one-to-one
    matching of |cosine|, summed over matched pairs and divided by the number of *true*
    directions, so a true direction left without a latent (fewer latents than directions)
    counts as 0. SAELens' ``mean_correlation_coefficient`` divides by min(n_true, n_learned)
    instead, which reads 1.0 for F latents that match F of 2F directions perfectly."""
    from scipy.optimize import linear_sum_assignment

    a = torch.nn.functional.normalize(truth_dirs.detach().cpu().double(), dim=1)
    b = torch.nn.functional.normalize(learned.detach().cpu().double(), dim=1)
    if a.shape[0] == 0:
        raise ValueError("mcc_over_truth needs at least one ground-truth direction")
    cos = (a @ b.T).abs().numpy()
    rows, cols = linear_sum_assignment(-cos)
    return float(cos[rows, cols].sum() / a.shape[0])


def mcc(decoder: Tensor, truth: GroundTruth) -> dict[str, float]:
    """Mean correlation coefficients of the latents (Hungarian one-to-one matching, |cosine|):
    ``"isolated"`` against the isolated features (SAELens' convention; there are always more
    latents than isolated features, so both conventions agree) and, for a discrete model,
    against every ground-truth direction: ``"all_directions"`` the standard MCC over the truth
    (:func:`mcc_over_truth`: an unmatched direction counts as 0) and
    ``"all_directions_saelens"`` SAELens' (divided by min(n_true, n_latents), inflated by
    n_true / F where F < n_true)."""
    from sae_lens.synthetic import mean_correlation_coefficient

    w = decoder.detach().cpu().float()
    out = {"isolated": mean_correlation_coefficient(truth.isolated.float(), w) if truth.isolated.numel() else float("nan")}
    dirs = truth.directions
    if dirs is not None:
        every = torch.cat([truth.isolated, dirs.reshape(-1, dirs.shape[-1])]).float()
        out["all_directions"] = mcc_over_truth(every, w)
        out["all_directions_saelens"] = mean_correlation_coefficient(every, w)
    return out


def rotation_null(
    decoders: list[Tensor],
    truth: GroundTruth,
    assignments: list[Assignment],
    tau: float,
    generator: torch.Generator | None = None,
):
    """Stability of the same SAEs after rotating, in every seed, each group's latents inside the
    group's subspace by an independent uniformly random rotation (their components outside it,
    and every other latent, unchanged).

    The chance level of group latents whose arrangement (the tiling the SAE learned) is kept but
    whose orientation is arbitrary: group latents as stable as this carry no information about a
    preferred basis. Returns :func:`seed_stability.stability_scores` of the rotated decoders."""
    from .seed_stability import stability_scores

    r = truth.bases.shape[1]
    rotated = []
    for w, a in zip(decoders, assignments):
        w = _unit(w).clone()
        for g in range(truth.bases.shape[0]):
            m = torch.from_numpy(a.group_mask(g))
            if m.any():
                b = truth.bases[g]
                coords = w[m] @ b.T
                q = subspaces.random_subspace(r, r, generator, dtype=torch.float64)
                w[m] = w[m] - coords @ b + coords @ q @ b
        rotated.append(w.float())
    return stability_scores(rotated, tau)
