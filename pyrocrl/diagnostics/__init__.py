"""Metrics that only need arrays: identifiability, graphs, concepts, dictionaries.

Every diagnostic accepts NumPy arrays or torch tensors, says what equivalence it measures up
to, and never selects anything using ground truth unless an argument says so.
"""

from pyrocrl.diagnostics.concepts import (
    concept_alignment,
    posterior_linearity,
    probe_accuracy,
    sae_concept_correlation,
)
from pyrocrl.diagnostics.dictionary import dictionary_recovery
from pyrocrl.diagnostics.graphs import (
    EdgeMetrics,
    LatentGraphMatch,
    cpdag,
    edge_metrics,
    intervention_leakage,
    match_latents,
    shd,
)
from pyrocrl.diagnostics.identifiability import Score, affine_r2, mcc, rotation_margin
from pyrocrl.diagnostics.variability import (
    jacobian_structure,
    lagged_points,
    sufficient_variability,
)

__all__ = [
    "EdgeMetrics",
    "LatentGraphMatch",
    "Score",
    "affine_r2",
    "concept_alignment",
    "cpdag",
    "dictionary_recovery",
    "edge_metrics",
    "intervention_leakage",
    "jacobian_structure",
    "lagged_points",
    "match_latents",
    "mcc",
    "posterior_linearity",
    "probe_accuracy",
    "rotation_margin",
    "sae_concept_correlation",
    "shd",
    "sufficient_variability",
]
