"""The :class:`Dataset` every simulator returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch


@dataclass
class Dataset:
    """Observations together with the ground truth that generated them.

    Attributes:
        x: observations, ``(N, D)`` for i.i.d. data or ``(N, T, D)`` for sequences.
        z: true latents with the same leading shape as ``x``: ``(N, n)`` or ``(N, T, n)``.
        u: ``(N,)`` long tensor, the domain / environment / auxiliary index of each
            sample, or ``None`` when the process has none.
        graph: ``(n, n)`` numpy array, true latent adjacency (``graph[i, j] != 0`` means
            ``z_i -> z_j``), or ``None``.
        info: everything needed to reproduce or inspect the generator (the seed, the
            ground-truth process object with its parameters and density, the mixing).
    """

    x: torch.Tensor
    z: torch.Tensor
    u: torch.Tensor | None = None
    graph: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.z.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"Dataset: z has {self.z.shape[0]} samples but x has {self.x.shape[0]}"
            )
        if self.u is not None and self.u.shape != (self.x.shape[0],):
            raise ValueError(
                f"Dataset: u must have shape ({self.x.shape[0]},), got {tuple(self.u.shape)}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index) -> Dataset:
        """The samples at ``index`` (a slice, boolean mask or integer tensor)."""
        u = None if self.u is None else self.u[index]
        return replace(self, x=self.x[index], z=self.z[index], u=u)

    def split(self, frac: float = 0.8, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Randomly split into ``(train, test)`` with ``frac`` of the samples in ``train``.

        The permutation depends only on ``seed``. Both parts keep ``graph`` and ``info``.
        """
        if not 0.0 < frac < 1.0:
            raise ValueError(f"split: frac must lie strictly between 0 and 1, got {frac}")
        n = len(self)
        num_train = int(round(frac * n))
        if num_train == 0 or num_train == n:
            raise ValueError(f"split: frac={frac} of {n} samples leaves one part empty")
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=generator)
        return self.subset(perm[:num_train]), self.subset(perm[num_train:])
