"""SAE architectures: SAELens classes of this repository and one recipe per architecture.

Importing this package registers, with SAELens and in :mod:`sae_studies.saes.registry`
(idempotently, so re-running notebook cells or re-importing modules is safe):

=====================  ==================================  ===============================
recipe (studies ask)   training class (SAELens registry)   saved / loaded as
=====================  ==================================  ===============================
``topk``               ``sparse_topk`` (sparse path)       SAELens ``topk``
``batchtopk``          ``sparse_batchtopk`` (sparse path)  SAELens ``jumprelu``
``hierarchical_topk``  ``hierarchical_topk``               ``hierarchical_topk`` (k ≤ K)
``multi_topk``         ``multi_topk``                      ``hierarchical_topk``
``standard``           SAELens ``standard``                SAELens ``standard``
``jumprelu``           SAELens ``jumprelu``                SAELens ``jumprelu``
``matryoshka_batchtopk``  SAELens ``matryoshka_batchtopk``  SAELens ``jumprelu``
``kron``               ``kron`` (sparse path)              ``kron`` (KronSAE, h·m·n pairs)
=====================  ==================================  ===============================

To add an architecture: write ``saes/<name>.py`` with its SAELens classes and a
``registry.register(Recipe(...), training=..., inference=...)`` call, and import it below.
"""

from __future__ import annotations

# one import per architecture file: each registers its recipe(s) and SAELens classes
from sae_studies.saes import builtin, hierarchical_topk, kron, sparse_topk  # noqa: F401
from sae_studies.saes.registry import Recipe, SAESpec, get, names, register

__all__ = ["Recipe", "SAESpec", "get", "names", "register"]
