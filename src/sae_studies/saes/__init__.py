"""SAE architectures registered with SAELens.

Importing this package registers (idempotently, so re-running notebook cells or re-importing
modules is safe):

training architectures (``sae_lens.registry.get_sae_training_class(name)``)
  * ``"sparse_topk"``      — SAELens TopK on the sparse fast path; saved as SAELens ``"topk"``
  * ``"sparse_batchtopk"`` — SAELens BatchTopK on the sparse fast path; saved as ``"jumprelu"``
  * ``"hierarchical_topk"`` — HierarchicalTopK (loss averaged over nested top-k prefixes)
  * ``"multi_topk"``       — Gao et al.'s Multi-TopK, ``L(k) + L(4k)/8``
inference architectures (``SAE.load_from_disk``)
  * ``"hierarchical_topk"`` — TopK SAE whose ``k`` is selectable up to the trained ``k_max``

``FAST_TRAINING_ARCHITECTURES`` maps a SAELens architecture name to the fast registered one.
"""

from __future__ import annotations

from typing import Any

from sae_lens.registry import (
    SAE_CLASS_REGISTRY,
    SAE_TRAINING_CLASS_REGISTRY,
)

from sae_studies.saes.hierarchical_topk import (
    HierarchicalTopKSAE,
    HierarchicalTopKSAEConfig,
    HierarchicalTopKTrainingSAE,
    HierarchicalTopKTrainingSAEConfig,
    MultiTopKTrainingSAE,
    MultiTopKTrainingSAEConfig,
)
from sae_studies.saes.sparse_decode import (
    SparsePattern,
    prefix_level_weights,
    prefix_mse_loss,
    selected_preacts,
    sparse_decode,
)
from sae_studies.saes.sparse_topk import (
    SparseBatchTopKTrainingSAE,
    SparseBatchTopKTrainingSAEConfig,
    SparseTopKTrainingSAE,
    SparseTopKTrainingSAEConfig,
)

__all__ = [
    "FAST_TRAINING_ARCHITECTURES",
    "TRAINING_ARCHITECTURES",
    "INFERENCE_ARCHITECTURES",
    "register",
    "fast_architecture",
    "SparsePattern",
    "sparse_decode",
    "selected_preacts",
    "prefix_mse_loss",
    "prefix_level_weights",
    "SparseTopKTrainingSAE",
    "SparseTopKTrainingSAEConfig",
    "SparseBatchTopKTrainingSAE",
    "SparseBatchTopKTrainingSAEConfig",
    "HierarchicalTopKSAE",
    "HierarchicalTopKSAEConfig",
    "HierarchicalTopKTrainingSAE",
    "HierarchicalTopKTrainingSAEConfig",
    "MultiTopKTrainingSAE",
    "MultiTopKTrainingSAEConfig",
]

#: SAELens architecture name -> the fast (sparse-path) training architecture registered here.
FAST_TRAINING_ARCHITECTURES: dict[str, str] = {
    "topk": "sparse_topk",
    "batchtopk": "sparse_batchtopk",
    "hierarchical_topk": "hierarchical_topk",
    "multi_topk": "multi_topk",
}

TRAINING_ARCHITECTURES: dict[str, tuple[type, type]] = {
    "sparse_topk": (SparseTopKTrainingSAE, SparseTopKTrainingSAEConfig),
    "sparse_batchtopk": (SparseBatchTopKTrainingSAE, SparseBatchTopKTrainingSAEConfig),
    "hierarchical_topk": (HierarchicalTopKTrainingSAE, HierarchicalTopKTrainingSAEConfig),
    "multi_topk": (MultiTopKTrainingSAE, MultiTopKTrainingSAEConfig),
}

INFERENCE_ARCHITECTURES: dict[str, tuple[type, type]] = {
    "hierarchical_topk": (HierarchicalTopKSAE, HierarchicalTopKSAEConfig),
}


def fast_architecture(name: str) -> str:
    """The fast training architecture for a SAELens (or already fast) architecture name."""
    if name in FAST_TRAINING_ARCHITECTURES:
        return FAST_TRAINING_ARCHITECTURES[name]
    if name in TRAINING_ARCHITECTURES:
        return name
    raise ValueError(
        f"architecture={name!r} has no fast training path; allowed: "
        f"{sorted(set(FAST_TRAINING_ARCHITECTURES) | set(TRAINING_ARCHITECTURES))}"
    )


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)


def _register_into(registry: dict[str, Any], name: str, entry: tuple[type, type]) -> None:
    current = registry.get(name)
    if current is None or all(_same_class(c, e) for c, e in zip(current, entry)):
        # new, or the same classes (possibly re-created by a module reload): (re)bind
        registry[name] = entry
        return
    raise ValueError(
        f"SAELens architecture {name!r} is already registered to {current[0].__name__}, "
        f"not to {entry[0].__name__} from sae_studies"
    )


def register() -> None:
    """Register every architecture above with SAELens; safe to call any number of times."""
    for name, entry in TRAINING_ARCHITECTURES.items():
        _register_into(SAE_TRAINING_CLASS_REGISTRY, name, entry)
    for name, entry in INFERENCE_ARCHITECTURES.items():
        _register_into(SAE_CLASS_REGISTRY, name, entry)


register()
