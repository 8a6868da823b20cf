"""Is the learned latent the true one, up to the ambiguity theory allows?

These functions only need arrays (NumPy or torch); they never import a model.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

__all__ = ["Score", "affine_r2", "as_samples", "mcc", "rotation_margin"]


class Score(float):
    """A float that also carries the details behind it as attributes.

    ``float(score)``, comparisons, formatting and JSON work as for the number itself;
    ``score.per_dim`` etc. hold the breakdown.
    """

    def __new__(cls, value: float, **details):
        self = super().__new__(cls, value)
        self.__dict__.update(details)
        return self

    def __repr__(self) -> str:
        extras = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()
                           if np.isscalar(v) or isinstance(v, str))
        return f"{type(self).__name__}({float(self):.4f}{', ' + extras if extras else ''})"


def _numpy(array) -> np.ndarray:
    """NumPy or torch (any device, with or without grad) as a NumPy array."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def as_samples(name: str, array) -> np.ndarray:
    """Convert ``(N, n)`` or ``(N, T, n)`` (NumPy or torch) to a float64 ``(samples, n)``
    matrix, flattening every leading dimension; raise naming ``name`` otherwise."""
    array = _numpy(array).astype(np.float64)
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (N, n) or (N, T, n), got {array.shape}")
    array = array.reshape(-1, array.shape[-1])
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf")
    return array


def _pair(z_true, z_est):
    a, b = as_samples("z_true", z_true), as_samples("z_est", z_est)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"z_true and z_est must have the same samples; got {a.shape[0]} and "
                         f"{b.shape[0]} (after flattening leading dims)")
    return a, b


def _cross_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between every column of ``a`` and every column of ``b``;
    a constant column correlates 0 with everything."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    norm_a, norm_b = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (a.T @ b) / np.outer(norm_a, norm_b)
    return np.nan_to_num(np.clip(corr, -1.0, 1.0), nan=0.0, posinf=0.0, neginf=0.0)


def mcc(z_true, z_est, method: str = "pearson") -> Score:
    r"""Mean correlation coefficient after the best one-to-one matching of dimensions.

    Computes :math:`C_{ij} = |\operatorname{corr}(z^\text{true}_i, \hat z_j)|`, solves the
    assignment problem :math:`\max_\pi \sum_i C_{i\pi(i)}` exactly (SciPy's Hungarian
    solver) and returns the mean of the matched :math:`C_{i\pi(i)}`.

    Equivalence it measures up to:

    * ``"pearson"``: permutation, sign and per-dimension **affine** maps
      (:math:`\hat z_{\pi(i)} = a_i z_i + b_i` gives 1);
    * ``"spearman"``: permutation and per-dimension **strictly monotone** maps (the
      component-wise identifiability of nonlinear ICA gives 1).

    Args:
        z_true: ``(N, n)`` or ``(N, T, n)``; leading dims are flattened.
        z_est: ``(N, m)`` or ``(N, T, m)`` with ``m >= n``: when the model has more latent
            dimensions than the truth, each true dimension is matched to a distinct estimated
            one and the extra estimated dimensions are ignored.
        method: ``"pearson"`` or ``"spearman"``.

    Returns:
        :class:`Score` in [0, 1] with ``per_dim`` (``(n,)``, matched |corr| of each true
        dimension), ``permutation`` (``(n,)``, the estimated dimension matched to each true
        one), ``signs`` (``(n,)``, sign of each matched correlation) and ``correlation`` (the
        signed ``(n, m)`` matrix).
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"mcc: method must be 'pearson' or 'spearman', got {method!r}")
    a, b = _pair(z_true, z_est)
    if b.shape[1] < a.shape[1]:
        raise ValueError(f"mcc: z_est has {b.shape[1]} dimensions, fewer than z_true's "
                         f"{a.shape[1]}; every true dimension needs its own match")
    if method == "spearman":
        a, b = rankdata(a, axis=0), rankdata(b, axis=0)
    corr = _cross_correlation(a, b)
    rows, cols = linear_sum_assignment(-np.abs(corr))
    per_dim = np.abs(corr[rows, cols])
    return Score(per_dim.mean(), per_dim=per_dim, permutation=cols,
                 signs=np.sign(corr[rows, cols]), correlation=corr, method=method)


def affine_r2(z_true, z_est, test_size: float = 0.25, seed: int = 0) -> Score:
    r"""Held-out :math:`R^2` of the best affine map from the estimated to the true latents.

    Fits :math:`z^\text{true} \approx A \hat z + b` by least squares (scikit-learn) on a
    random ``1 - test_size`` of the samples and scores it on the rest, per true dimension.
    Equivalence it measures up to: any invertible **affine** map (linear identifiability).
    It does not reward a merely nonlinear relation, and being 1 does not imply the dimensions
    are disentangled (use :func:`mcc` for that).

    Returns:
        :class:`Score`: the mean held-out :math:`R^2` over true dimensions, with ``per_dim``.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"affine_r2: test_size must lie in (0, 1), got {test_size}")
    a, b = _pair(z_true, z_est)
    b_train, b_test, a_train, a_test = train_test_split(b, a, test_size=test_size,
                                                        random_state=seed)
    if len(a_test) < 2 or len(a_train) <= b.shape[1]:
        raise ValueError(f"affine_r2: {a.shape[0]} samples are too few for a held-out fit of "
                         f"{b.shape[1]} estimated dimensions")
    fit = LinearRegression().fit(b_train, a_train)
    per_dim = r2_score(a_test, fit.predict(b_test), multioutput="raw_values")
    return Score(float(np.mean(per_dim)), per_dim=np.asarray(per_dim))


def rotation_margin(z, u, angle: float = 0.25 * np.pi) -> Score:
    r"""How much worse a *rotated* copy of the latents fits a conditionally factorial
    Gaussian model, in nats per sample: the likelihood margin that identifies the axes.

    For every pair of dimensions :math:`(i, j)`, rotates :math:`(z_i, z_j)` by ``angle``, refits
    per-domain independent Gaussians (maximum likelihood) to the original and the rotated
    latents, and reports the drop of the mean log-likelihood. A model class with a
    conditionally factorial Gaussian prior (IVAE) can prefer the true axes only by this much;
    0 means the rotation is invisible (e.g. one domain, or variances that do not change), and
    any estimator whose approximation error exceeds the margin can land on rotated axes.
    This is an oracle analysis of a *data set* (it needs the true ``z``), not a model score.

    Args:
        z: ``(N, n)`` latents (or ``(N, T, n)``, flattened).
        u: ``(N,)`` integer domain labels (for sequences, one per leading sample).
        angle: rotation angle in radians.

    Returns:
        :class:`Score`: the smallest margin over pairs, with ``pairwise`` (``(n, n)``).
    """
    z = as_samples("z", z)
    u = np.asarray(u.detach().cpu().numpy() if isinstance(u, torch.Tensor) else u).ravel()
    if u.shape[0] != z.shape[0]:
        if z.shape[0] % u.shape[0]:
            raise ValueError(f"rotation_margin: u has {u.shape[0]} labels for {z.shape[0]} "
                             f"samples")
        u = np.repeat(u, z.shape[0] // u.shape[0])
    n = z.shape[1]
    if n < 2:
        raise ValueError(f"rotation_margin: needs at least 2 latent dimensions, got {n}")

    def mean_log_lik(columns):
        total = 0.0
        for d in np.unique(u):
            block = columns[u == d]
            var = block.var(0)
            total += -0.5 * np.sum(np.log(2 * np.pi * np.e * var)) * len(block)
        return total / len(columns)

    c, s = np.cos(angle), np.sin(angle)
    pairwise = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            pair = z[:, [i, j]]
            rotated = pair @ np.array([[c, s], [-s, c]])
            pairwise[i, j] = pairwise[j, i] = mean_log_lik(pair) - mean_log_lik(rotated)
    upper = pairwise[np.triu_indices(n, 1)]
    return Score(float(upper.min()), pairwise=pairwise, angle=angle)
