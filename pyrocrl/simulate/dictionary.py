"""Sparse-dictionary data: the generative story sparse autoencoders assume (seed 004,
appendix H), with the true atoms known so that dictionary recovery can be scored."""

from __future__ import annotations

import numpy as np
import torch

from pyrocrl._checks import check_positive_int
from pyrocrl.simulate._random import seeded
from pyrocrl.simulate.dataset import Dataset

__all__ = ["sparse_dictionary"]


def _positive_int(name, value):
    return int(check_positive_int("sparse_dictionary", name, value))


def sparse_dictionary(
    d_in: int = 32,
    num_atoms: int = 48,
    k: int = 3,
    num_samples: int = 4096,
    seed: int = 0,
    noise: float = 0.0,
    min_coefficient: float = 0.5,
    offset: float = 0.0,
    dense_rank: int = 0,
    dense_scale: float = 1.0,
) -> Dataset:
    r"""Observations that are sums of exactly ``k`` of ``num_atoms`` unit-norm atoms.

    .. math::
        a_j = g_j / \lVert g_j \rVert_2,\ g_j \sim \mathcal N(0, I_{d_\text{in}}),\qquad
        S_n \sim \operatorname{Uniform}\{S \subset \{1..m\}: |S| = k\},

    .. math::
        z_{n,j} = \mathbb 1\{j \in S_n\}\,(c_\text{min} + |\epsilon_{n,j}|),\
        \epsilon_{n,j} \sim \mathcal N(0, 1),\qquad
        x_n = \sum_j z_{n,j}\, a_j + \tau\, w_n^\top B + b + \nu_n,\qquad
        w_n \sim \mathcal N(0, I_r),\ \nu_n \sim \mathcal N(0, \sigma^2 I),

    independently over samples ``n``; ``m = num_atoms``, :math:`c_\text{min}` =
    ``min_coefficient``, :math:`\sigma` = ``noise`` and :math:`b` = ``offset`` times a random
    unit vector. ``B: (r, d_in)`` has orthonormal random rows: an optional dense low-rank
    component (``r = dense_rank``, :math:`\tau` = ``dense_scale``; none by default), a simple
    stand-in for the dependence among concepts that :class:`~pyrocrl.models.sae.StructuredSAE`
    models with its low-rank encoder. With ``num_atoms > d_in`` the dictionary is overcomplete
    and only the sparsity of ``z`` identifies it (up to permutation of the atoms, and scale of
    each atom traded against its coefficients).

    Args:
        d_in: observation dimension.
        num_atoms: dictionary size ``m``.
        k: active atoms per sample, ``1 <= k <= num_atoms``.
        num_samples: ``N``.
        seed: fixes atoms, supports, coefficients and noise; the caller's RNGs are untouched.
        noise: standard deviation :math:`\sigma \ge 0` of isotropic Gaussian noise on ``x``.
        min_coefficient: smallest active coefficient :math:`c_\text{min} \ge 0`.
        offset: norm of the constant offset :math:`b` (0: none).
        dense_rank: :math:`r`, rank of the dense Gaussian component, ``0 <= r <= d_in``.
        dense_scale: :math:`\tau \ge 0`, its standard deviation along each direction.

    Returns:
        :class:`Dataset` with ``x: (N, d_in)``, ``z: (N, num_atoms)`` (the codes),
        ``info["atoms"]: (num_atoms, d_in)`` (unit-norm rows), ``info["offset"]: (d_in,)``,
        ``info["dense_basis"]: (dense_rank, d_in)``, ``info["dense_factors"]: (N, dense_rank)``,
        ``info["coherence"]`` (largest :math:`|\langle a_i, a_j\rangle|`, ``i != j``) and the
        arguments.
    """
    d_in = _positive_int("d_in", d_in)
    num_atoms = _positive_int("num_atoms", num_atoms)
    num_samples = _positive_int("num_samples", num_samples)
    k = _positive_int("k", k)
    if k > num_atoms:
        raise ValueError(f"sparse_dictionary: k must satisfy 1 <= k <= num_atoms={num_atoms}, "
                         f"got k={k}")
    if not isinstance(dense_rank, (int, np.integer)) or isinstance(dense_rank, bool) \
            or not 0 <= dense_rank <= d_in:
        raise ValueError(f"sparse_dictionary: dense_rank must be an int in [0, d_in={d_in}], "
                         f"got {dense_rank!r}")
    for name, value in (("noise", noise), ("min_coefficient", min_coefficient),
                        ("offset", offset), ("dense_scale", dense_scale)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
            raise ValueError(f"sparse_dictionary: {name} must be a finite number >= 0, got "
                             f"{value!r}")
    with seeded(seed):
        atoms = torch.randn(num_atoms, d_in)
        atoms = atoms / atoms.norm(dim=1, keepdim=True)
        direction = torch.randn(d_in)
        bias = offset * direction / direction.norm()
        # a uniformly random k-subset per sample: the k smallest of m i.i.d. uniforms
        support = torch.rand(num_samples, num_atoms).topk(k, dim=1, largest=False).indices
        magnitude = min_coefficient + torch.randn(num_samples, k).abs()
        z = torch.zeros(num_samples, num_atoms).scatter(1, support, magnitude)
        x = z @ atoms + bias
        dense_basis = torch.linalg.qr(torch.randn(d_in, d_in))[0][:, :dense_rank].t()
        dense_factors = torch.randn(num_samples, dense_rank)
        if dense_rank:
            x = x + dense_scale * dense_factors @ dense_basis
        if noise > 0:
            x = x + noise * torch.randn_like(x)
    gram = (atoms @ atoms.t()).abs().fill_diagonal_(0.0)
    coherence = float(gram.max()) if num_atoms > 1 else 0.0
    info = dict(seed=seed, atoms=atoms, offset=bias, coherence=coherence, k=k, noise=noise,
                min_coefficient=min_coefficient, d_in=d_in, num_atoms=num_atoms,
                dense_basis=dense_basis, dense_factors=dense_factors, dense_scale=dense_scale)
    return Dataset(x=x, z=z, info=info)
