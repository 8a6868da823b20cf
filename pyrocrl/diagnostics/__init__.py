"""Metrics that only need arrays: identifiability (and, later, graphs and concepts).

Every diagnostic accepts NumPy arrays or torch tensors, says what equivalence it measures up
to, and never selects anything using ground truth unless an argument says so.
"""

from pyrocrl.diagnostics.identifiability import Score, affine_r2, mcc, rotation_margin

__all__ = ["Score", "affine_r2", "mcc", "rotation_margin"]
