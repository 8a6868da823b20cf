"""Did a learned dictionary (e.g. an SAE's decoder) find the true atoms?

Only needs arrays (NumPy or torch); never imports a model.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from pyrocrl.diagnostics.identifiability import Score

__all__ = ["dictionary_recovery"]


def _atoms(name: str, array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1:
        raise ValueError(f"dictionary_recovery: {name} must have shape (num_atoms, d_in), got "
                         f"{array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"dictionary_recovery: {name} contains NaN or inf")
    return array


def _unit_rows(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


def dictionary_recovery(true_atoms, learned_atoms, threshold: float = 0.9) -> Score:
    r"""Fraction of true atoms that some learned atom points along, up to sign and scale.

    With :math:`C_{ij} = |\cos(a_i, \hat a_j)|` between true atom :math:`a_i` and learned
    atom :math:`\hat a_j` (a zero vector has cosine 0 with everything), the score is

    .. math::
        \frac{1}{m} \#\{i : \max_j C_{ij} \ge \text{threshold}\}.

    Equivalence it measures up to: permutation of the atoms and a non-zero scale (of either
    sign) of each. Several true atoms may be credited to the same learned atom by the max;
    the one-to-one version (Hungarian matching, :math:`\max_\pi \sum_i C_{i\pi(i)}`) is
    reported alongside (``matched_fraction``), and is 0 for true atoms left unmatched when
    there are fewer learned atoms than true ones.

    Args:
        true_atoms: ``(m, d_in)``, one atom per row.
        learned_atoms: ``(p, d_in)``, e.g. an SAE's ``W_dec``; any ``p >= 1``.
        threshold: cosine in ``[0, 1]`` from which an atom counts as recovered.

    Returns:
        :class:`Score` with value in [0, 1] and ``per_atom`` (``(m,)``, best :math:`|\cos|`
        of each true atom), ``best_match`` (``(m,)``, the learned atom achieving it),
        ``matched`` (``(m,)``, :math:`|\cos|` under the one-to-one matching),
        ``assignment`` (``(m,)``, learned atom matched one-to-one, ``-1`` if none),
        ``matched_fraction``, ``mean_max_cosine``, ``threshold`` and ``cosine`` (the signed
        ``(m, p)`` matrix).
    """
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"dictionary_recovery: threshold must lie in [0, 1], got {threshold!r}")
    true, learned = _atoms("true_atoms", true_atoms), _atoms("learned_atoms", learned_atoms)
    if true.shape[1] != learned.shape[1]:
        raise ValueError(f"dictionary_recovery: true_atoms has d_in={true.shape[1]} but "
                         f"learned_atoms has d_in={learned.shape[1]}")
    cosine = np.clip(_unit_rows(true) @ _unit_rows(learned).T, -1.0, 1.0)
    magnitude = np.abs(cosine)
    per_atom = magnitude.max(1)
    best_match = magnitude.argmax(1)
    rows, cols = linear_sum_assignment(-magnitude)
    matched = np.zeros(true.shape[0])
    matched[rows] = magnitude[rows, cols]
    assignment = np.full(true.shape[0], -1)
    assignment[rows] = cols
    return Score(float(np.mean(per_atom >= threshold)), per_atom=per_atom,
                 best_match=best_match, matched=matched, assignment=assignment,
                 matched_fraction=float(np.mean(matched >= threshold)),
                 mean_max_cosine=float(per_atom.mean()), threshold=float(threshold),
                 cosine=cosine)
