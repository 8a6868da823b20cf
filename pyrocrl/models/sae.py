r"""Sparse autoencoders (SAEs): linear dictionaries with a sparse encoder, the tool used to read
concepts out of a language model's activations (seed 004, appendix H).

Every SAE here shares one affine dictionary and one pre-encoder bias,

.. math::
    \text{pre}(x) = W_\text{enc}^\top (x - b_\text{dec}) + b_\text{enc}
    \in \mathbb R^{d_\text{sae}},\qquad \hat x = c^\top W_\text{dec} + b_\text{dec},

with ``W_enc: (d_in, d_sae)``, ``b_enc: (d_sae,)``, ``W_dec: (d_sae, d_in)`` (row ``i`` is the
dictionary atom of feature ``i``) and ``b_dec: (d_in,)``. The variants differ in how the codes
``c`` are made sparse (a hard TopK, a batch-wise TopK, or an annealed L1 penalty) and, for
:class:`StructuredSAE`, in an extra low-rank encoder. They are plain ``torch.nn.Module`` s,
trained by :func:`pyrocrl.inference.sae.fit_sae`.

References:
    1. L. Gao et al., "Scaling and evaluating sparse autoencoders", 2024 (TopK SAE).
    2. B. Bussmann, P. Leask, N. Nanda, "BatchTopK Sparse Autoencoders", 2024.
    3. T. Conerly et al., "Circuits Updates - April 2024", Anthropic (decoder-norm-weighted
       L1 penalty, sparsity-coefficient warm-up).
    4. A. Karvonen et al., "Measuring Progress in Dictionary Learning for Language Model
       Interpretability with Board Game Models", 2024 (the annealing SAE trainer).
    5. Y. Liu et al., "I Predict Therefore I Am: Is Next Token Prediction Enough to Learn
       Human-Interpretable Concepts from Data?", appendix H (the structured SAE, eqs. 87-92).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "BatchTopKSAE",
    "L1AnnealingSAE",
    "SparseAutoencoder",
    "StructuredSAE",
    "TopKSAE",
]


def _check_int(owner: str, name: str, value, low: int, high: int | None = None,
               high_name: str | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else a ``ValueError`` naming ``owner``/``name``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low} <= {name}" + (f" <= {high_name}={high}" if high is not None else "")
        raise ValueError(f"{owner}: {name} must satisfy {bound}, got {name}={value}")
    return int(value)


def _check_nonnegative(owner: str, name: str, value) -> float:
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class SparseAutoencoder(nn.Module):
    r"""Base class: the affine dictionary every SAE shares.

    .. math::
        c = \sigma\big(W_\text{enc}^\top (x - b_\text{dec}) + b_\text{enc}\big),\qquad
        \hat x = c^\top W_\text{dec} + b_\text{dec},

    where the sparsifying non-linearity :math:`\sigma` (and any penalty) is the derived class's
    choice. Read as a generative story, an activation is a sparse non-negative combination of
    dictionary atoms (the rows of ``W_dec``) around the offset ``b_dec``:
    :math:`x \approx b_\text{dec} + \sum_i c_i W_{\text{dec},i}` with few :math:`c_i > 0`.

    Shapes: ``x: (N, d_in)``, codes ``(N, d_sae)``. Initialisation: the rows of ``W_dec`` are
    random unit vectors, ``W_enc = W_dec^T`` (tied start, as in refs. 1-3), biases are zero;
    the trainer sets ``b_dec`` from the data before training.

    Derived classes must implement ``_encode(x) -> codes`` (no input checks) and
    ``loss_terms(x, step) -> (loss, metrics, codes)``, and set the class attribute
    ``unit_norm_decoder`` (whether the trainer calls :meth:`normalize_decoder` after every
    optimiser step).

    Args:
        d_in: dimension of the activations.
        d_sae: number of dictionary features (often larger than ``d_in``).
    """

    unit_norm_decoder: bool = True

    def __init__(self, d_in: int, d_sae: int):
        super().__init__()
        owner = type(self).__name__
        self.d_in = _check_int(owner, "d_in", d_in, 1)
        self.d_sae = _check_int(owner, "d_sae", d_sae, 1)
        atoms = torch.randn(self.d_sae, self.d_in)
        atoms = atoms / atoms.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(atoms)
        self.W_enc = nn.Parameter(atoms.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(self.d_in))

    # ----------------------------------------------------------------------------- checks
    def check_input(self, x, name: str = "x") -> torch.Tensor:
        """Raise unless ``x`` is a finite floating ``(N, d_in)`` tensor; return it."""
        owner = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[-1] != self.d_in:
            raise ValueError(f"{owner}: {name} has shape {tuple(x.shape)}, expected "
                             f"(N, d_in={self.d_in})")
        if not x.is_floating_point():
            raise ValueError(f"{owner}: {name} must be a floating-point tensor, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{owner}: {name} contains NaN or inf")
        return x

    # ----------------------------------------------------------------------------- maps
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`W_\text{enc}^\top (x - b_\text{dec}) + b_\text{enc}`, ``(N, d_sae)``."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def _encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, d_sae)`` of ``x: (N, d_in)`` (differentiable; wrap in ``torch.no_grad``
        for analysis)."""
        return self._encode(self.check_input(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``codes @ W_dec + b_dec``, ``(N, d_in)``, of ``codes: (N, d_sae)``."""
        if not isinstance(codes, torch.Tensor) or codes.ndim != 2 \
                or codes.shape[-1] != self.d_sae:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes)
            raise ValueError(f"{type(self).__name__}: codes has shape {shape}, expected "
                             f"(N, d_sae={self.d_sae})")
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))``, ``(N, d_in)``."""
        return self.decode(self.encode(x))

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, x: torch.Tensor, step: int
                   ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:  # pragma: no cover
        """``(loss, metrics, sparse_codes)`` of the batch ``x`` at optimiser ``step``."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """The training objective of the batch ``x: (N, d_in)`` at optimiser ``step``
        (0-based), and a dict of floats to track: at least ``"mse"`` (mean squared error per
        element) and ``"l0"`` (mean number of non-zero sparse codes per sample)."""
        loss, metrics, _ = self.loss_terms(x, step)
        return loss, metrics

    def _reconstruction_error(self, x, x_hat, sparse_codes) -> tuple[torch.Tensor, dict]:
        mse = (x_hat - x).pow(2).mean()
        l0 = (sparse_codes > 0).sum(-1).float().mean()
        return mse, {"mse": mse.item(), "l0": l0.item()}

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every row of ``W_dec`` to unit Euclidean norm (in place)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @property
    def atoms(self) -> torch.Tensor:
        """The learned dictionary: rows of ``W_dec`` scaled to unit norm, ``(d_sae, d_in)``,
        detached."""
        w = self.W_dec.detach()
        return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_sae={self.d_sae}"


class TopKSAE(SparseAutoencoder):
    r"""TopK sparse autoencoder (Gao et al. 2024): exactly at most ``k`` active features.

    .. math::
        c = \operatorname{TopK}_k\big(\operatorname{ReLU}(W_\text{enc}^\top (x - b_\text{dec})
        + b_\text{enc})\big),\qquad \hat x = c^\top W_\text{dec} + b_\text{dec},

    where :math:`\operatorname{TopK}_k` keeps the ``k`` largest entries of each sample and zeros
    the rest. Sparsity is enforced by the architecture, so the objective is the reconstruction
    error alone, :math:`\mathcal L = \frac{1}{d_\text{in}} \lVert x - \hat x \rVert_2^2`
    (averaged over the batch); the rows of ``W_dec`` are kept at unit norm.

    Args:
        d_in: dimension of the activations.
        d_sae: number of features.
        k: active features per sample, ``1 <= k <= d_sae``.
    """

    def __init__(self, d_in: int, d_sae: int, k: int):
        super().__init__(d_in, d_sae)
        self.k = _check_int(type(self).__name__, "k", k, 1, self.d_sae, "d_sae")

    def _encode(self, x):
        acts = torch.relu(self.pre_activation(x))
        values, index = acts.topk(self.k, dim=-1)
        return torch.zeros_like(acts).scatter(-1, index, values)

    def loss_terms(self, x, step):
        codes = self._encode(x)
        mse, metrics = self._reconstruction_error(x, self.decode(codes), codes)
        return mse, metrics, codes

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"


class BatchTopKSAE(TopKSAE):
    r"""BatchTopK sparse autoencoder (Bussmann et al. 2024): ``k`` active features per sample
    *on average over the batch*.

    In training mode, for a batch :math:`x_{1:B}`,

    .. math::
        a_n = \operatorname{ReLU}(W_\text{enc}^\top (x_n - b_\text{dec}) + b_\text{enc}),\qquad
        c_{n,i} = a_{n,i}\,\mathbb 1\{a_{n,i} \text{ is among the } kB \text{ largest of }
        a_{1:B}\},

    so a sample may use more or fewer than ``k`` features. Each training batch updates a
    running threshold (so does any :meth:`encode` call in training mode), the exponential
    moving average of the smallest kept activation,
    :math:`\theta \leftarrow \beta\theta + (1-\beta)\min\{c_{n,i} > 0\}` (the first batch sets
    it). In eval mode (``module.eval()``) inference is per sample:
    :math:`c_{n,i} = a_{n,i}\,\mathbb 1\{a_{n,i} > \theta\}` (plain ReLU until a training batch
    has set :math:`\theta`). The objective is the reconstruction error, the decoder rows are
    kept at unit norm.

    Args:
        d_in, d_sae, k: as for :class:`TopKSAE`.
        threshold_decay: :math:`\beta \in [0, 1)`.
    """

    def __init__(self, d_in: int, d_sae: int, k: int, threshold_decay: float = 0.99):
        super().__init__(d_in, d_sae, k)
        if not (isinstance(threshold_decay, (int, float)) and 0.0 <= threshold_decay < 1.0):
            raise ValueError(f"BatchTopKSAE: threshold_decay must lie in [0, 1), got "
                             f"{threshold_decay!r}")
        self.threshold_decay = float(threshold_decay)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("num_threshold_updates", torch.zeros((), dtype=torch.long))

    def _encode(self, x):
        acts = torch.relu(self.pre_activation(x))
        if not self.training:
            return acts * (acts > self.threshold)
        flat = acts.flatten()
        values, index = flat.topk(min(self.k * acts.shape[0], flat.numel()))
        codes = torch.zeros_like(flat).scatter(0, index, values).view_as(acts)
        with torch.no_grad():
            kept = values[values > 0]
            if kept.numel():
                smallest = kept.min()
                if int(self.num_threshold_updates) == 0:
                    self.threshold.copy_(smallest)
                else:
                    self.threshold.lerp_(smallest, 1.0 - self.threshold_decay)
                self.num_threshold_updates += 1
        return codes

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={float(self.threshold):.4g}"


class L1AnnealingSAE(SparseAutoencoder):
    r"""ReLU sparse autoencoder with a decoder-norm-weighted L1 penalty whose coefficient is
    warmed up (the annealing SAE of refs. 3-4, the "L1-annealing" baseline of ref. 5).

    .. math::
        c = \operatorname{ReLU}(W_\text{enc}^\top (x - b_\text{dec}) + b_\text{enc}),\qquad
        \hat x = c^\top W_\text{dec} + b_\text{dec},

    .. math::
        \mathcal L_t = \frac{1}{d_\text{in}}\Big(\lVert x - \hat x\rVert_2^2
        + \lambda_t \sum_i |c_i|\,\lVert W_{\text{dec},i}\rVert_2\Big),\qquad
        \lambda_t = \lambda \min\Big(1, \frac{t + 1}{T_\text{warm}}\Big),

    averaged over the batch. Weighting each code by its atom's norm makes the penalty
    invariant to trading scale between codes and atoms, so the decoder rows are *not*
    renormalised. The whole objective is divided by ``d_in`` so that its first term is the
    per-element MSE; :math:`\lambda` then means what it means in ref. 3 (there ``lambda ~ 5``
    for activations rescaled so that :math:`E\lVert x\rVert^2 = d_\text{in}`). The penalty is
    linear in the scale of ``x`` while the error is quadratic: rescale ``lambda`` with the RMS
    of your activations, or rescale the activations.

    Ref. [38] of the paper anneals the exponent ``p`` of an Lp penalty late in training; this
    class keeps ``p = 1`` and anneals only the coefficient (the warm-up of H.1/H.3).

    Args:
        d_in, d_sae: as for :class:`SparseAutoencoder`.
        sparsity_coefficient: :math:`\lambda \ge 0`.
        sparsity_warmup_steps: :math:`T_\text{warm}`; 0 switches the warm-up off.
    """

    unit_norm_decoder = False

    def __init__(self, d_in: int, d_sae: int, sparsity_coefficient: float = 5.0,
                 sparsity_warmup_steps: int = 400):
        super().__init__(d_in, d_sae)
        owner = type(self).__name__
        self.sparsity_coefficient = _check_nonnegative(owner, "sparsity_coefficient",
                                                       sparsity_coefficient)
        self.sparsity_warmup_steps = _check_int(owner, "sparsity_warmup_steps",
                                                sparsity_warmup_steps, 0)

    def sparsity_coefficient_at(self, step: int) -> float:
        r""":math:`\lambda_t`: rises linearly from :math:`\lambda / T_\text{warm}` at step 0
        to :math:`\lambda` at step :math:`T_\text{warm} - 1`, constant afterwards."""
        if self.sparsity_warmup_steps == 0:
            return self.sparsity_coefficient
        return self.sparsity_coefficient * min(1.0, (step + 1) / self.sparsity_warmup_steps)

    def _encode(self, x):
        return torch.relu(self.pre_activation(x))

    def sparsity_penalty(self, codes: torch.Tensor) -> torch.Tensor:
        r""":math:`\frac{1}{d_\text{in}} E_n \sum_i |c_{n,i}|\,\lVert W_{\text{dec},i}\rVert_2`
        of ``codes: (N, d_sae)`` (a scalar)."""
        return (codes.abs() * self.W_dec.norm(dim=1)).sum(-1).mean() / self.d_in

    def loss_terms(self, x, step):
        codes = self._encode(x)
        mse, metrics = self._reconstruction_error(x, self.decode(codes), codes)
        lam = self.sparsity_coefficient_at(step)
        penalty = self.sparsity_penalty(codes)
        metrics.update(sparsity_penalty=penalty.item(), sparsity_coefficient=lam)
        return mse + lam * penalty, metrics, codes

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, sparsity_coefficient={self.sparsity_coefficient}, "
                f"sparsity_warmup_steps={self.sparsity_warmup_steps}")


NUCLEAR_NORM_TARGETS = ("encoder", "codes")


class StructuredSAE(L1AnnealingSAE):
    r"""Structured SAE of ref. 5 (appendix H.1, eqs. 87-92): an L1-annealing SAE plus a
    low-rank structured encoder that models dependence among the latent concepts.

    .. math::
        s = \operatorname{ReLU}(W_s^\top (x - b_\text{dec}) + b_s),\qquad
        l = U V^\top (x - b_\text{dec}),\qquad h = s + l,\qquad
        \hat x = h^\top W_\text{dec} + b_\text{dec},

    with the sparse encoder :math:`(W_s, b_s)` = ``(W_enc, b_enc)``, ``U: (d_sae, r)``,
    ``V: (d_in, r)``. The loss (eq. 91, divided by ``d_in`` as in :class:`L1AnnealingSAE`) is

    .. math::
        \mathcal L_t = \frac{1}{d_\text{in}}\Big(\lVert x - \hat x\rVert_2^2
        + \lambda_t \sum_i |s_i|\,\lVert W_{\text{dec},i}\rVert_2
        + \alpha\,\lambda_t\,\lVert M \rVert_*\Big),

    where the nuclear norm of the structured encoder matrix :math:`M = U V^\top`
    (``(d_sae, d_in)``, rank :math:`\le r`) is estimated by the sum of its top-:math:`k`
    singular values (eq. 92), :math:`\lVert M\rVert_* \approx \sum_{j \le k} \sigma_j(M)`,
    with right singular vectors from ``torch.svd_lowrank`` (randomized: ``oversample`` extra
    directions and ``svd_iterations`` power iterations; class attributes). It is exact (to
    rounding) when :math:`k \ge r`, and otherwise as accurate as the randomized SVD, which is
    good when the spectrum has a gap after :math:`\sigma_k`. The value is computed as
    :math:`\sum_j \lVert M v_j \rVert_2` with the singular vectors :math:`v_j` held fixed,
    which has the same value and the correct (sub)gradient :math:`\sum_j u_j v_j^\top`
    without differentiating through the SVD.
    ``nuclear_norm_on="codes"`` instead penalises the nuclear norm of the batch of structured
    codes ``l: (N, d_sae)``, as the authors' public training code does.

    :meth:`encode` returns the combined representation ``h`` (what the decoder reconstructs
    from, so ``forward(x) == decode(encode(x))``); :meth:`encode_sparse` returns ``s``. ``h`` is
    dense wherever the low-rank part is non-zero, so the tracked ``"l0"`` and the trainer's
    dead-feature count refer to ``s``. ``U`` starts at zero (as a LoRA adapter), so training
    starts from the plain L1-annealing SAE.

    Choosing :math:`\alpha` trades the two failure modes the paper's ablation describes: on
    synthetic data with no dense structure (``tests/models/test_sae.py``, sparsity coefficient
    1) :math:`\alpha = 3` switches the low-rank part off and every atom is recovered, while
    with :math:`\alpha = 1` a spurious dense map survives and costs 15-65% of the atoms; on
    data with a rank-2 dense component, :math:`\alpha = 1` captures it (and lowers the sparse
    L0 from ~7 to ~4.5) where :math:`\alpha = 3` keeps only one of its two directions.

    Args:
        d_in, d_sae, sparsity_coefficient, sparsity_warmup_steps: as for
            :class:`L1AnnealingSAE`.
        rank: :math:`r`, ``1 <= rank <= min(d_in, d_sae)``.
        low_rank_coefficient: :math:`\alpha \ge 0` (0 gives the plain L1-annealing loss with an
            unpenalised low-rank encoder).
        top_singular_values: :math:`k \ge 1` in eq. 92.
        nuclear_norm_on: ``"encoder"`` (the matrix :math:`UV^\top`) or ``"codes"``.
    """

    oversample: int = 8
    svd_iterations: int = 4

    def __init__(self, d_in: int, d_sae: int, rank: int = 4, low_rank_coefficient: float = 1.0,
                 top_singular_values: int = 64, sparsity_coefficient: float = 5.0,
                 sparsity_warmup_steps: int = 400, nuclear_norm_on: str = "encoder"):
        super().__init__(d_in, d_sae, sparsity_coefficient=sparsity_coefficient,
                         sparsity_warmup_steps=sparsity_warmup_steps)
        owner = type(self).__name__
        self.rank = _check_int(owner, "rank", rank, 1, min(self.d_in, self.d_sae),
                               "min(d_in, d_sae)")
        self.low_rank_coefficient = _check_nonnegative(owner, "low_rank_coefficient",
                                                       low_rank_coefficient)
        self.top_singular_values = _check_int(owner, "top_singular_values",
                                              top_singular_values, 1)
        if nuclear_norm_on not in NUCLEAR_NORM_TARGETS:
            raise ValueError(f"{owner}: nuclear_norm_on must be one of {NUCLEAR_NORM_TARGETS}, "
                             f"got {nuclear_norm_on!r}")
        self.nuclear_norm_on = nuclear_norm_on
        self.U = nn.Parameter(torch.zeros(self.d_sae, self.rank))
        self.V = nn.Parameter(torch.randn(self.d_in, self.rank) / math.sqrt(self.d_in))

    @property
    def structured_encoder(self) -> torch.Tensor:
        """:math:`M = U V^T`, ``(d_sae, d_in)``."""
        return self.U @ self.V.t()

    def structured_codes(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`l = U V^T (x - b_dec)`, ``(N, d_sae)`` (no input checks)."""
        return ((x - self.b_dec) @ self.V) @ self.U.t()

    def encode_sparse(self, x: torch.Tensor) -> torch.Tensor:
        """The sparse representation ``s: (N, d_sae)`` of ``x: (N, d_in)``."""
        return super()._encode(self.check_input(x))

    def _encode(self, x):
        return super()._encode(x) + self.structured_codes(x)

    def nuclear_norm(self, matrix: torch.Tensor | None = None) -> torch.Tensor:
        r"""Sum of the top ``top_singular_values`` singular values of ``matrix`` (default: the
        structured encoder :math:`UV^\top`), eq. 92; differentiable, scalar."""
        matrix = self.structured_encoder if matrix is None else matrix
        k = min(self.top_singular_values, *matrix.shape)
        # oversample the randomized range finder, as its documentation advises, keep the top k
        q = min(k + self.oversample, *matrix.shape)
        with torch.no_grad():
            _, _, right = torch.svd_lowrank(matrix.detach(), q=q, niter=self.svd_iterations)
        return (matrix @ right[:, :k]).norm(dim=0).sum()

    def loss_terms(self, x, step):
        sparse = super()._encode(x)
        low_rank = self.structured_codes(x)
        mse, metrics = self._reconstruction_error(x, self.decode(sparse + low_rank), sparse)
        lam = self.sparsity_coefficient_at(step)
        penalty = self.sparsity_penalty(sparse)
        loss = mse + lam * penalty
        if self.low_rank_coefficient > 0:
            target = self.structured_encoder if self.nuclear_norm_on == "encoder" else low_rank
            nuclear = self.nuclear_norm(target) / self.d_in
            loss = loss + self.low_rank_coefficient * lam * nuclear
            metrics["nuclear_norm"] = nuclear.item() * self.d_in
        metrics.update(sparsity_penalty=penalty.item(), sparsity_coefficient=lam)
        return loss, metrics, sparse

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, rank={self.rank}, "
                f"low_rank_coefficient={self.low_rank_coefficient}, "
                f"top_singular_values={self.top_singular_values}")
