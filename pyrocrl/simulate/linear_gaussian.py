r"""Linear-Gaussian state-space data: the setting in which the Kalman filter is exact.

.. math::
    z_1 \sim \mathcal N(m_0, P_0),\qquad
    z_t = A z_{t-1} + w_t,\quad w_t \sim \mathcal N(0, Q),\qquad
    x_t = C z_t + v_t,\quad v_t \sim \mathcal N(0, R)

The latents are identifiable only up to an invertible linear map :math:`z \mapsto S z`
(which changes :math:`A, C, Q, P_0, m_0` but not the distribution of :math:`x`), so this is a
test bed for exact inference (:class:`pyrocrl.models.LinearGaussianSSM`), not for
identifiability.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyrocrl.distributions import STATE_SPACE_MATRICES, check_state_space_matrices
from pyrocrl.simulate._random import seeded
from pyrocrl.simulate.dataset import Dataset

#: The matrices of the process, in the order of the generative story. The keyword arguments
#: of :func:`linear_gaussian` and of :class:`pyrocrl.models.LinearGaussianSSM`, and the keys
#: of the returned ``info``.
MATRIX_NAMES = tuple(STATE_SPACE_MATRICES)
_COVARIANCES = ("transition_cov", "observation_cov", "initial_cov")


def _check_int(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"linear_gaussian: {name} must be an int >= {minimum}, got {value!r}")


def _random_covariance(rng: np.random.Generator, dim: int, floor: float, spread: float):
    """``floor * I + spread * B B^T / dim`` with a standard normal ``B``: eigenvalues
    ``>= floor``."""
    b = rng.standard_normal((dim, dim))
    return floor * np.eye(dim) + spread * b @ b.T / dim


def _sample(matrices: dict[str, torch.Tensor], num_sequences: int, seq_len: int):
    """The Pyro program: sites ``"z_t"``, ``"x_t"`` (t = 1..T) in plate ``"data"``;
    returns ``(z, x)``, shapes ``(N, T, n)`` and ``(N, T, D)``."""
    a, c = matrices["transition_matrix"], matrices["observation_matrix"]
    scale_tril = {k: torch.linalg.cholesky(matrices[k]) for k in _COVARIANCES}
    zs, xs = [], []
    with pyro.plate("data", num_sequences):
        loc = matrices["initial_mean"]
        tril = scale_tril["initial_cov"]
        for t in pyro.markov(range(1, seq_len + 1)):
            z = pyro.sample(f"z_{t}", dist.MultivariateNormal(loc, scale_tril=tril))
            x = pyro.sample(f"x_{t}", dist.MultivariateNormal(
                z @ c.T, scale_tril=scale_tril["observation_cov"]))
            zs.append(z)
            xs.append(x)
            loc, tril = z @ a.T, scale_tril["transition_cov"]
    return torch.stack(zs, 1), torch.stack(xs, 1)


def linear_gaussian(
    state_dim: int = 4,
    obs_dim: int = 6,
    num_sequences: int = 100,
    seq_len: int = 100,
    seed: int = 0,
    spectral_radius: float = 0.9,
    dtype: torch.dtype = torch.float32,
    **matrices,
) -> Dataset:
    r"""Sequences from a linear-Gaussian state-space model (see the module docstring).

    Matrices that are not given are drawn from ``seed``:

    * ``transition_matrix`` :math:`A`: a standard normal ``(n, n)`` matrix rescaled to
      spectral radius ``spectral_radius`` (so the process is stable for ``< 1``);
    * ``observation_matrix`` :math:`C`: standard normal ``(D, n)``;
    * ``transition_cov`` :math:`Q = 0.1 I + 0.4 B B^\top / n` and ``observation_cov``
      :math:`R = 0.1 I + 0.1 B' B'^\top / D` with standard normal :math:`B, B'`;
    * ``initial_mean`` :math:`m_0 = 0`, ``initial_cov`` :math:`P_0 = I`.

    Args:
        state_dim: n.
        obs_dim: D.
        num_sequences: N.
        seq_len: T >= 1.
        seed: fixes the random matrices and the samples.
        spectral_radius: largest eigenvalue modulus of the random :math:`A` (ignored when
            ``transition_matrix`` is given).
        dtype: of the returned ``x`` and ``z`` (sampling itself runs in float64).
        **matrices: any of ``transition_matrix`` ``(n, n)``, ``transition_cov`` ``(n, n)``,
            ``observation_matrix`` ``(D, n)``, ``observation_cov`` ``(D, D)``,
            ``initial_mean`` ``(n,)``, ``initial_cov`` ``(n, n)`` (arrays or tensors) to use
            instead of the random ones. Covariances must be symmetric positive definite.

    Returns:
        :class:`Dataset` with ``x: (N, T, D)``, ``z: (N, T, n)``, ``u=None`` and ``info``
        holding the six matrices (float64 NumPy arrays, under the names above), ``"seed"``,
        ``"spectral_radius"`` (of the :math:`A` used), ``"state_dim"``, ``"obs_dim"``,
        ``"num_sequences"`` and ``"seq_len"``.

    Raises:
        ValueError: a size is not a positive int, or a given matrix has the wrong shape, is
            not finite, or (covariances) is not symmetric positive definite; the message
            names the argument.
        TypeError: an unknown keyword argument.
    """
    unknown = sorted(set(matrices) - set(MATRIX_NAMES))
    if unknown:
        raise TypeError(f"linear_gaussian: unexpected keyword argument(s) {unknown}; the "
                        f"matrices are {list(MATRIX_NAMES)}")
    _check_int("state_dim", state_dim, 1)
    _check_int("obs_dim", obs_dim, 1)
    _check_int("num_sequences", num_sequences, 1)
    _check_int("seq_len", seq_len, 1)
    if not (isinstance(spectral_radius, (int, float)) and spectral_radius > 0):
        raise ValueError(f"linear_gaussian: spectral_radius must be a positive number, "
                         f"got {spectral_radius!r}")
    n, d = state_dim, obs_dim
    given = {name: value.numpy() for name, value in check_state_space_matrices(
        "linear_gaussian", n, d, **matrices).items()}

    with seeded(seed) as rng:
        # Draw every random matrix even when it is overridden, so that overriding one leaves
        # the others unchanged.
        a = rng.standard_normal((n, n))
        a *= spectral_radius / np.abs(np.linalg.eigvals(a)).max()
        defaults = {
            "transition_matrix": a,
            "observation_matrix": rng.standard_normal((d, n)),
            "transition_cov": _random_covariance(rng, n, 0.1, 0.4),
            "observation_cov": _random_covariance(rng, d, 0.1, 0.1),
            "initial_mean": np.zeros(n),
            "initial_cov": np.eye(n),
        }
        params = {name: given.get(name, defaults[name]) for name in MATRIX_NAMES}
        tensors = {name: torch.as_tensor(value, dtype=torch.float64)
                   for name, value in params.items()}
        z, x = _sample(tensors, num_sequences, seq_len)

    info = dict(params, seed=seed, state_dim=n, obs_dim=d, num_sequences=num_sequences,
                seq_len=seq_len,
                spectral_radius=float(np.abs(np.linalg.eigvals(params["transition_matrix"]))
                                      .max()))
    return Dataset(x=x.to(dtype), z=z.to(dtype), u=None, info=info)
