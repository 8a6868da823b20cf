r"""Numerical checks of the two conditions behind component-wise identifiability.

* :func:`sufficient_variability`: does a conditionally factorized density
  :math:`p(z \mid u)` (or :math:`p(z_t \mid z_{t-L:t-1}, u)`) change across domains in
  enough independent ways (seed 001, TCL/iVAE; seed 003, TDRL/LEAP)? Works on a simulator's
  true process and on a fitted model's learned prior alike.
* :func:`jacobian_structure`: is the map from the true latents to the learned ones, seen
  through its Jacobian, a scaled permutation (component-wise identifiability)?

A *conditional density* is, by protocol, either an object with a method
``conditional_log_prob(z, u, context=None)`` (e.g.
:class:`pyrocrl.simulate.NonstationarySources`, :class:`pyrocrl.models.IVAE`) or a plain
callable ``f(z, u, context)``. It takes ``z: (P, n)`` float points, ``u: (P,)`` long domain
indices and ``context``: ``None`` (i.i.d. models) or the ``(P, lag, n)`` history, oldest to
newest (temporal models), and returns ``(P,)`` values :math:`\log p(z \mid \text{context},
u)`, twice differentiable in ``z`` by autograd. Rows must not interact (no batch
statistics): the derivatives of row ``i`` are taken from the sum over rows.

These functions never import a model; they only call what they are given.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from pyrocrl._checks import check_positive_int
from pyrocrl.diagnostics.identifiability import Score

__all__ = [
    "jacobian_structure",
    "lagged_points",
    "log_density_derivatives",
    "sufficient_variability",
]


# -- input handling ------------------------------------------------------------------------
def _tensor(name: str, array, dtype: torch.dtype, device=None) -> torch.Tensor:
    """``array`` (NumPy, torch or nested lists) as a finite, detached ``dtype`` tensor."""
    try:
        if isinstance(array, torch.Tensor):
            out = array.detach()
        else:
            out = torch.as_tensor(np.asarray(array, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a NumPy array or torch tensor of numbers, got "
                        f"{type(array).__name__}") from error
    if not (out.is_floating_point() or out.dtype in _INT_DTYPES or out.dtype == torch.bool):
        raise TypeError(f"{name} must hold real numbers, got dtype {out.dtype}")
    out = out.to(dtype=dtype, device=device)
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} contains {int((~torch.isfinite(out)).sum())} NaN/inf values")
    return out


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _points(name: str, z, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    z = _tensor(name, z, dtype)
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"{name} must have shape (P, n) with P, n >= 1 (one point per row), "
                         f"got {tuple(z.shape)}")
    return z


def _context(context, z: torch.Tensor) -> torch.Tensor | None:
    if context is None:
        return None
    context = _tensor("context", context, z.dtype, z.device)
    P, n = z.shape
    if context.ndim != 3 or context.shape[0] != P or context.shape[2] != n or \
            context.shape[1] < 1:
        raise ValueError(f"context must be None or the history of each point with shape "
                         f"(P, lag, n) = ({P}, lag >= 1, {n}) to match z, got "
                         f"{tuple(context.shape)}")
    return context


def _chunk_size(chunk_size) -> int:
    return check_positive_int("", "chunk_size", chunk_size)


def _log_prob_fn(density) -> Callable:
    """The protocol: a ``conditional_log_prob`` method, else the callable itself."""
    method = getattr(density, "conditional_log_prob", None)
    if callable(method):
        return lambda z, u, context: method(z, u, context=context)
    if callable(density):
        return density
    raise TypeError(f"density must have a method conditional_log_prob(z, u, context=None) or "
                    f"be a callable f(z, u, context) returning log p(z | context, u), got "
                    f"{type(density).__name__}")


def _derivatives(log_prob: Callable, z: torch.Tensor, u: torch.Tensor,
                 context: torch.Tensor | None):
    r"""Exact :math:`\partial_k \log p`, :math:`\partial_k^2 \log p` (``(M, n)`` each) and
    the largest :math:`|\partial_i \partial_j \log p|`, :math:`i \ne j`, and
    :math:`|\partial_k^2 \log p|` per row (``(M,)`` each), by autograd: one backward pass
    for the gradient and one per coordinate for the Hessian rows."""
    M, n = z.shape
    with torch.enable_grad():
        z = z.detach().clone().requires_grad_(True)
        out = log_prob(z, u, context)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"density must return a torch.Tensor of log-densities, got "
                            f"{type(out).__name__}")
        if out.shape != (M,):
            raise ValueError(f"density returned shape {tuple(out.shape)} for z of shape "
                             f"{(M, n)}; expected ({M},): one log-density per point")
        if not torch.isfinite(out).all():
            raise ValueError(f"density returned {int((~torch.isfinite(out)).sum())} NaN/inf "
                             f"log-densities (are the points in its support?)")
        if not out.requires_grad:
            raise ValueError("density returned log-densities that do not depend "
                             "differentiably on z (computed under torch.no_grad, detached, "
                             "or constant in z); autograd needs the graph to z")
        (grad,) = torch.autograd.grad(out.sum(), z, create_graph=True, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(z)
        diag = torch.zeros_like(z)
        cross = z.new_zeros(M)
        if grad.requires_grad:
            for k in range(n):
                (row,) = torch.autograd.grad(grad[:, k].sum(), z, retain_graph=True,
                                             allow_unused=True)
                if row is None:
                    continue
                row = row.detach()
                diag[:, k] = row[:, k]
                off = row.abs()
                off[:, k] = 0.0
                cross = torch.maximum(cross, off.amax(1))
    grad = grad.detach()
    if not (torch.isfinite(grad).all() and torch.isfinite(diag).all()):
        raise ValueError("density has NaN/inf first or second derivatives at some points")
    return grad, diag, cross, diag.abs().amax(1)


def _domain_count(density, num_domains) -> int:
    own = getattr(density, "num_domains", None)
    if num_domains is None:
        if not isinstance(own, int):
            raise ValueError("num_domains is required: the density has no integer "
                             "num_domains attribute to take it from")
        num_domains = own
    if not isinstance(num_domains, int | np.integer) or isinstance(num_domains, bool) or \
            num_domains < 2:
        raise ValueError(f"num_domains must be an int >= 2 (differences between domains are "
                         f"what is measured), got {num_domains!r}")
    if isinstance(own, int) and num_domains > own:
        raise ValueError(f"num_domains={num_domains} exceeds the density's own num_domains="
                         f"{own}")
    return int(num_domains)


# -- public --------------------------------------------------------------------------------
def log_density_derivatives(density, z, u, context=None, dtype: torch.dtype = torch.float32):
    r"""First and diagonal second derivatives of :math:`\log p(z \mid \text{context}, u)`.

    .. math::
        \Big(\frac{\partial \log p(z \mid u)}{\partial z_k}\Big)_{k=1}^n,\qquad
        \Big(\frac{\partial^2 \log p(z \mid u)}{\partial z_k^2}\Big)_{k=1}^n

    computed exactly by autograd (one backward pass for the gradient, one per coordinate for
    the second derivatives), nothing assumed about the density beyond differentiability.
    Concatenated they are the vector :math:`w(u)` of :func:`sufficient_variability`.

    Args:
        density: a conditional density (module docstring: the protocol).
        z: ``(P, n)`` points.
        u: a domain index (int, used for every point) or ``(P,)`` integers.
        context: ``None`` or ``(P, lag, n)`` histories.
        dtype: floating dtype the points are cast to (the density's parameters must accept
            it; float32 suits neural densities, float64 gives exact values where possible).

    Returns:
        ``(first, second)``: two detached ``(P, n)`` tensors.
    """
    log_prob = _log_prob_fn(density)
    z = _points("z", z, dtype)
    context = _context(context, z)
    if isinstance(u, int | np.integer) and not isinstance(u, bool):
        u = torch.full((z.shape[0],), int(u), dtype=torch.long, device=z.device)
    else:
        u = torch.as_tensor(u).long().reshape(-1).to(z.device)
        if u.shape != (z.shape[0],):
            raise ValueError(f"u must be an int or have shape (P,) = ({z.shape[0]},), got "
                             f"{tuple(u.shape)}")
    first, second, _, _ = _derivatives(log_prob, z, u, context)
    return first, second


def lagged_points(z, lag: int = 1):
    r"""Cut sequences into (point, history) pairs for temporal densities.

    For ``z: (N, T, n)`` returns ``points: (N (T - lag), n)`` = :math:`z_t` and
    ``context: (N (T - lag), lag, n)`` = :math:`z_{t-\text{lag}:t-1}` (oldest first), for
    every :math:`t \ge \text{lag}` of every sequence: the arguments
    :func:`sufficient_variability` takes for :math:`p(z_t \mid z_{t-L:t-1}, u)`.
    """
    check_positive_int("", "lag", lag)
    dtype = z.dtype if isinstance(z, torch.Tensor) and z.is_floating_point() else torch.float32
    z = _tensor("z", z, dtype)
    if z.ndim != 3 or z.shape[1] <= lag:
        raise ValueError(f"z must have shape (N, T, n) with T > lag={lag}, got "
                         f"{tuple(z.shape)}")
    n = z.shape[2]
    windows = z.unfold(1, lag + 1, 1).transpose(-1, -2)  # (N, T - lag, lag + 1, n)
    windows = windows.reshape(-1, lag + 1, n)
    return windows[:, lag].contiguous(), windows[:, :lag].contiguous()


def sufficient_variability(
    density,
    z,
    num_domains: int | None = None,
    context=None,
    reference: int = 0,
    rtol: float | None = None,
    atol: float = 0.0,
    dtype: torch.dtype = torch.float32,
    chunk_size: int = 4096,
) -> Score:
    r"""Check seed 001/003's *sufficient variability* condition numerically, point by point.

    For a conditionally factorized density :math:`p(z \mid u) = \prod_k p_k(z_k \mid u)`
    (temporal: :math:`p(z_t \mid z_{t-L:t-1}, u)`, with the history as ``context``), at each
    point :math:`z` and for every domain :math:`u = 0, \dots, U-1` take the :math:`2n`-vector

    .. math::
        w(u) = \Big(\frac{\partial \log p(z \mid u)}{\partial z_1}, \dots,
        \frac{\partial \log p(z \mid u)}{\partial z_n},
        \frac{\partial^2 \log p(z \mid u)}{\partial z_1^2}, \dots,
        \frac{\partial^2 \log p(z \mid u)}{\partial z_n^2}\Big)

    (exact autograd derivatives), the differences against the ``reference`` domain
    :math:`r`, :math:`v(u) = w(u) - w(r)` for the :math:`U - 1` other domains, and the
    :math:`2n \times (U-1)` matrix :math:`V(z) = [v(u)]_{u \ne r}`. The condition holds at
    :math:`z` when :math:`V(z)` has rank :math:`2n`. It is what makes the change of variables
    :math:`z = h(\hat z)` between two models with the same observed distribution
    component-wise: subtracting the domain-:math:`r` equation cancels the Jacobian
    log-determinant and leaves :math:`2n` unknowns per pair :math:`i \ne j` that only a
    rank-:math:`2n` system forces to zero. So it needs :math:`U \ge 2n + 1` domains.

    It is a *sufficient* condition. Gaussians whose variances change but means do not fail
    it everywhere (rank :math:`\le n`: the first-derivative change
    :math:`-(z_k - \mu_k)\,\Delta\sigma_{u,k}^{-2}` is the second-derivative change
    :math:`-\Delta\sigma_{u,k}^{-2}` times :math:`z_k - \mu_k`), although TCL/iVAE identify
    such sources by an exponential-family argument with :math:`n + 1` domains; Laplace
    sources fail it too (their second derivatives vanish almost everywhere). Densities that
    are not conditionally factorized are outside the theory: ``cross_derivative_ratio``
    reports how far from factorized the density is.

    Equivalence it measures up to: the rank is invariant to the parametrisation details that
    do not matter, i.e. rescaling each :math:`z_k` (with the density transformed
    accordingly), the choice of reference domain, and the normalising constants of
    :math:`p(\cdot \mid u)`.

    Tolerances and scale: first and second derivatives have different units, so each of the
    :math:`2n` rows of :math:`[w(0), \dots, w(U-1)]` is first divided by its largest absolute
    value over the domains at that point (a zero row is left as is). The singular values
    :math:`s_1 \ge s_2 \ge \dots` of the resulting :math:`V(z)` are unit-free, invariant to
    rescaling each :math:`z_k`, and entries are relative changes of a derivative (1 = it
    changes by its own size). A singular value counts when
    :math:`s_i > \max(\texttt{atol},\ \texttt{rtol}\cdot\max(s_1, 1))`: relative to the
    largest one, but never below ``rtol`` times the size of the derivatives themselves,
    so that rounding-level differences between domains that are identical in exact
    arithmetic do not count. The default ``rtol`` is
    :math:`\sqrt{\epsilon}` of ``dtype`` (about :math:`3.5 \cdot 10^{-4}` for float32 and
    :math:`1.5 \cdot 10^{-8}` for float64), well above rounding noise and well below the
    variability of any domain change worth the name.

    Args:
        density: the conditional density (module docstring: protocol), e.g. a simulator's
            true process (``ds.info["process"]``) or a fitted model with a
            ``conditional_log_prob`` (:class:`~pyrocrl.models.IVAE`,
            ``TemporalVAE``).
        z: ``(P, n)`` points (NumPy or torch), e.g. true latents for a true process, the
            model's encoded latents for a fitted model.
        num_domains: :math:`U \ge 2`, the domains compared; defaults to
            ``density.num_domains``.
        context: ``None`` for i.i.d. densities, else ``(P, lag, n)`` histories of the points
            (see :func:`lagged_points`).
        reference: the domain :math:`r` the others are differenced against.
        rtol: relative tolerance of the rank decision (``None``: :math:`\sqrt{\epsilon}`).
        atol: absolute floor on the counted singular values (in the unit-free scale above).
        dtype: floating dtype for the computation; points and context are cast to it.
            float32 (default) suits neural densities; float64 works with densities whose
            parameters promote (simulators, :class:`~pyrocrl.models.IVAE`).
        chunk_size: the most (point, domain) evaluations done at once, to bound memory.

    Returns:
        :class:`Score`: the fraction of points where the condition holds, with

        * ``verdict``: a one-line summary, e.g. ``"holds at 100% of 256 points ..."``;
        * ``holds`` ``(P,)`` bool, ``rank`` ``(P,)`` int;
        * ``sigma_min`` ``(P,)``: :math:`s_{2n}` (0 when :math:`U - 1 < 2n`);
        * ``singular_values`` ``(P, min(2n, U - 1))``;
        * ``tolerance`` ``(P,)``: the threshold used at each point;
        * ``sigma_min_median``, ``sigma_min_min``, ``rank_min``, ``rank_max``;
        * ``needed`` (:math:`2n`), ``num_domains``, ``num_points``, ``reference``, ``rtol``,
          ``atol``;
        * ``cross_derivative_ratio``: the largest
          :math:`|\partial_i\partial_j \log p| / \max_k |\partial_k^2 \log p|`,
          :math:`i \ne j`, over points and domains (0 for a factorized density).

    Examples:
        The true process of a simulator (means and variances both change)::

            ds = simulate.nonstationary_sources(num_latents=3, num_domains=20,
                                                mean_range=(-2.0, 2.0), seed=0)
            sv = diagnostics.sufficient_variability(ds.info["process"], ds.z[:500],
                                                    ds.info["num_domains"])
            float(sv), sv.verdict        # 1.0, 'holds at 100% of 500 points ...'

        A fitted iVAE, on its own learned prior at its own encoded latents::

            z_hat = model.encode(x, u)
            sv = diagnostics.sufficient_variability(model, z_hat[:500])  # U = model's

        A temporal density on sequences ``z: (N, T, n)``::

            points, context = diagnostics.variability.lagged_points(z, lag=1)
            sv = diagnostics.sufficient_variability(process, points, U, context=context)
    """
    log_prob = _log_prob_fn(density)
    U = _domain_count(density, num_domains)
    z = _points("z", z, dtype)
    context = _context(context, z)
    if not isinstance(reference, int | np.integer) or isinstance(reference, bool) or \
            not 0 <= reference < U:
        raise ValueError(f"reference must be a domain index in [0, num_domains={U}), got "
                         f"{reference!r}")
    reference = int(reference)
    if rtol is None:
        rtol = math.sqrt(torch.finfo(dtype).eps)
    if not (isinstance(rtol, int | float) and 0 <= rtol < 1):
        raise ValueError(f"rtol must be a number in [0, 1), got {rtol!r}")
    if not (isinstance(atol, int | float) and atol >= 0):
        raise ValueError(f"atol must be a number >= 0, got {atol!r}")
    chunk = max(1, _chunk_size(chunk_size) // U)

    P, n = z.shape
    needed = 2 * n
    others = [d for d in range(U) if d != reference]
    ranks, sigmas, tolerances, crosses = [], [], [], []
    for start in range(0, P, chunk):
        zc = z[start:start + chunk]
        m = zc.shape[0]
        u = torch.arange(U, device=z.device).repeat_interleave(m)  # row d * m + i
        ctx = None if context is None else context[start:start + m].repeat(U, 1, 1)
        first, second, cross, diag_max = _derivatives(log_prob, zc.repeat(U, 1), u, ctx)
        # w: (m, 2n, U)
        w = torch.cat([first, second], 1).reshape(U, m, needed).permute(1, 2, 0).double()
        scale = w.abs().amax(-1, keepdim=True)
        w = w / torch.where(scale > 0, scale, torch.ones_like(scale))
        v = w[..., others] - w[..., reference:reference + 1]
        s = torch.linalg.svdvals(v).cpu()  # (m, min(2n, U - 1)), descending
        tol = torch.clamp(rtol * torch.clamp(s[:, 0], min=1.0), min=float(atol))
        ranks.append((s > tol[:, None]).sum(1))
        sigmas.append(s)
        tolerances.append(tol)
        ratio = torch.where(cross > 0, cross / torch.clamp(diag_max, min=1e-300),
                            torch.zeros_like(cross))
        crosses.append(ratio.max().cpu())

    rank = torch.cat(ranks).numpy()
    singular_values = torch.cat(sigmas).numpy()
    sigma_min = (singular_values[:, needed - 1] if U - 1 >= needed
                 else np.zeros(P))
    holds = rank == needed
    fraction = float(holds.mean())
    cross_ratio = float(torch.stack(crosses).max())

    if U - 1 < needed:
        verdict = (f"fails: at most U-1 = {U - 1} domain differences for 2n = {needed} "
                   f"needed (rank at most {int(rank.max())} at {P} points)")
    elif fraction == 1.0:
        verdict = (f"holds at 100% of {P} points (rank 2n = {needed}; median smallest "
                   f"singular value {np.median(sigma_min):.3g})")
    else:
        low, high = int(rank[~holds].min()), int(rank[~holds].max())
        ranks_seen = f"{low}" if low == high else f"{low} to {high}"
        verdict = (f"holds at {fraction:.1%} of {P} points; elsewhere rank {ranks_seen}"
                   if fraction > 0 else f"fails at all {P} points: rank {ranks_seen}")
        verdict += f" of the 2n = {needed} needed"
        if rank.max() <= n:
            verdict += (f" (rank <= n = {n}: first- and second-derivative changes are not "
                        f"independent, e.g. variance-only Gaussian modulation or "
                        f"zero second derivatives as for Laplace sources)")
    if cross_ratio > 1e-3:
        verdict += (f"; warning: density is not conditionally factorized (cross second "
                    f"derivatives up to {cross_ratio:.2g} of the diagonal ones)")
    return Score(
        fraction, verdict=verdict, holds=holds, rank=rank, sigma_min=sigma_min,
        singular_values=singular_values, tolerance=torch.cat(tolerances).numpy(),
        sigma_min_median=float(np.median(sigma_min)), sigma_min_min=float(sigma_min.min()),
        rank_min=int(rank.min()), rank_max=int(rank.max()), needed=needed, num_domains=U,
        num_points=P, reference=reference, rtol=float(rtol), atol=float(atol),
        cross_derivative_ratio=cross_ratio,
    )


def jacobian_structure(
    encoder: Callable,
    mixing: Callable,
    z,
    u=None,
    standardize: bool = True,
    dtype: torch.dtype = torch.float32,
    chunk_size: int = 1024,
) -> Score:
    r"""How far the Jacobian of learned latents w.r.t. true latents is from a scaled
    permutation.

    With the true mixing :math:`x = g(z)` and the encoder :math:`\hat z = e(x)`, autograd
    through both gives at each point

    .. math::
        J(z) = \frac{\partial\, e(g(z))}{\partial z} \in \mathbb R^{\hat n \times n}.

    Component-wise identifiability (:math:`\hat z_{\pi(j)} = h_j(z_j)` with invertible
    :math:`h_j`) means every :math:`J(z)` is a scaled permutation: one nonzero per row, the
    same permutation :math:`\pi` everywhere. The score measures the share of each learned
    latent's local sensitivity that goes to its matched true latent,

    .. math::
        \text{off}(z) = \frac{1}{n} \sum_{j=1}^n \Big(1 -
        \frac{J_{\pi(j) j}(z)^2}{\sum_{l} J_{\pi(j) l}(z)^2}\Big),\qquad
        \text{score} = 1 - \operatorname{mean}_z \text{off}(z),

    with one permutation :math:`\pi` for all points: the Hungarian matching (SciPy) that
    maximises the mean squared share :math:`S_{ij} = \operatorname{mean}_z J_{ij}^2 /
    \lVert J_{i\cdot}\rVert^2`, i.e. minimises the reported off-mass (as :func:`mcc`
    maximises the mean correlation; nothing else is selected with the ground truth).
    Learned latents with a zero gradient at a point are left out of that point's mean.

    Equivalence it measures up to: permutation and arbitrary component-wise (also nonlinear,
    non-monotone) transformations of the learned latents, since scaling a row of
    :math:`J` leaves its shares unchanged; with ``standardize=True`` also the units of the
    true latents (column :math:`l` is multiplied by the standard deviation of :math:`z_l`
    over the points, so the shares are local variance contributions). 1 means
    component-wise identified at every point; :math:`1/n` is the floor (all entries equal);
    an orthogonal mixing of two latents by :math:`45^\circ` gives 0.5; a Haar-random
    rotation of equal-scale latents scores about 0.81, 0.69, 0.54 and 0.36 on average for
    :math:`n` = 2, 3, 5 and 10 (the matching takes the largest entries, so small rotations
    score close to 1).

    Args:
        encoder: ``x -> z_hat`` (or ``(x, u) -> z_hat`` when ``u`` is given) returning a
            differentiable ``(P, n_hat)`` tensor, e.g. ``lambda x, u: model.posterior(x,
            u)[0]``. Not ``model.encode``, which runs without gradients.
        mixing: the true ``z -> x`` (e.g. ``ds.info["mixing"]``), a differentiable callable
            on ``(P, n)`` batches. Rows must not interact in either map.
        z: ``(P, n)`` true latents at which to evaluate (NumPy or torch).
        u: ``None`` or ``(P,)`` integer auxiliary variables passed to the encoder.
        standardize: express :math:`J` per standard deviation of each true latent.
        dtype: dtype of the points (float32 suits neural encoders).
        chunk_size: points per autograd batch.

    Returns:
        :class:`Score`: ``1 - off_mass`` (1 = scaled permutation), with ``off_mass`` (its
        complement), ``off_mass_per_point`` ``(P,)``, ``off_mass_per_dim`` ``(n,)`` (per
        true latent), ``permutation`` ``(n,)`` (learned latent matched to each true one, as
        in :func:`mcc`), ``share`` ``(n_hat, n)`` (:math:`S`), ``mean_abs_jacobian``
        ``(n_hat, n)`` (standardized if ``standardize``), ``jacobian`` ``(P, n_hat, n)``
        (raw), ``matched_derivative`` ``(n,)`` (median raw :math:`J_{\pi(j) j}`), ``signs``
        ``(n,)`` (its sign) and ``sign_consistency`` ``(n,)`` (fraction of points where
        :math:`J_{\pi(j) j}` has that sign: 1 for monotone component-wise maps), and
        ``verdict``.

    Example::

        ds = simulate.nonstationary_sources(num_latents=3, num_domains=20, seed=0)
        js = diagnostics.jacobian_structure(lambda x, u: model.posterior(x, u)[0],
                                            ds.info["mixing"], ds.z[:500], ds.u[:500])
        float(js), js.permutation, js.off_mass_per_dim
    """
    if not callable(encoder):
        raise TypeError(f"encoder must be callable (x -> z_hat), got {type(encoder).__name__}")
    if not callable(mixing):
        raise TypeError(f"mixing must be callable (z -> x), got {type(mixing).__name__}")
    z = _points("z", z, dtype)
    P, n = z.shape
    if u is not None:
        u = torch.as_tensor(u.detach() if isinstance(u, torch.Tensor) else np.asarray(u))
        if u.dtype not in _INT_DTYPES or u.shape != (P,):
            raise ValueError(f"u must be None or (P,) = ({P},) integers aligned with z, got "
                             f"shape {tuple(u.shape)} and dtype {u.dtype}")
        u = u.long().to(z.device)
    chunk = _chunk_size(chunk_size)

    jacobians = []
    for start in range(0, P, chunk):
        with torch.enable_grad():
            zc = z[start:start + chunk].clone().requires_grad_(True)
            x = mixing(zc)
            if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] != zc.shape[0]:
                raise ValueError(f"mixing must map z of shape {tuple(zc.shape)} to a tensor "
                                 f"of shape ({zc.shape[0]}, D), got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            z_hat = encoder(x) if u is None else encoder(x, u[start:start + chunk])
            if isinstance(z_hat, tuple | list):
                raise TypeError("encoder returned a tuple; return the latents only, e.g. "
                                "lambda x, u: model.posterior(x, u)[0]")
            if not isinstance(z_hat, torch.Tensor) or z_hat.ndim != 2 or \
                    z_hat.shape[0] != zc.shape[0]:
                raise ValueError(f"encoder must return a tensor of shape ({zc.shape[0]}, "
                                 f"n_hat), got {getattr(z_hat, 'shape', type(z_hat).__name__)}")
            if z_hat.shape[1] < n:
                raise ValueError(f"encoder returns {z_hat.shape[1]} latents, fewer than the "
                                 f"{n} true ones; every true latent needs its own match")
            if not z_hat.requires_grad:
                raise ValueError("encoder output does not depend differentiably on x (is it "
                                 "run under torch.no_grad, like model.encode? use e.g. "
                                 "lambda x, u: model.posterior(x, u)[0])")
            rows = []
            for i in range(z_hat.shape[1]):
                (row,) = torch.autograd.grad(z_hat[:, i].sum(), zc, retain_graph=True,
                                             allow_unused=True)
                rows.append(torch.zeros_like(zc) if row is None else row.detach())
        jacobians.append(torch.stack(rows, 1))
    jac = torch.cat(jacobians).double().cpu().numpy()  # (P, n_hat, n)
    if not np.isfinite(jac).all():
        raise ValueError("the Jacobian of encoder(mixing(z)) has NaN/inf entries")

    scaled = jac
    if standardize:
        std = z.double().std(0).cpu().numpy() if P > 1 else np.ones(n)
        scaled = jac * np.where(std > 0, std, 1.0)[None, None, :]
    row_mass = (scaled ** 2).sum(-1)  # (P, n_hat)
    live = row_mass > 0
    if not live.any():
        raise ValueError("the Jacobian of encoder(mixing(z)) is zero at every point: the "
                         "encoder does not depend on the latents")
    share = np.where(live[..., None], scaled ** 2 / np.where(live, row_mass, 1.0)[..., None],
                     np.nan)  # (P, n_hat, n)
    share_mean = np.nansum(share, 0) / np.maximum(live.sum(0), 1)[:, None]  # (n_hat, n)
    rows, cols = linear_sum_assignment(-share_mean.T)  # true j -> learned permutation[j]
    permutation = cols[np.argsort(rows)]
    matched_share = share[:, permutation, np.arange(n)]  # (P, n), NaN where the row is flat
    off = 1.0 - matched_share
    counted = ~np.isnan(off)
    off = np.nan_to_num(off)
    off_per_point = np.where(counted.any(1), off.sum(1) / np.maximum(counted.sum(1), 1), np.nan)
    off_per_dim = np.where(counted.any(0), off.sum(0) / np.maximum(counted.sum(0), 1), np.nan)
    off_mass = float(off.sum() / counted.sum()) if counted.any() else 1.0
    matched = jac[:, permutation, np.arange(n)]  # (P, n)
    median = np.median(matched, 0)
    signs = np.sign(median)
    sign_consistency = (np.sign(matched) == signs[None, :]).mean(0)
    verdict = (f"{1 - off_mass:.1%} of the learned latents' local sensitivity lies on the "
               f"matched true latents (off-permutation mass {off_mass:.3g}; 0 = scaled "
               f"permutation) at {P} points")
    return Score(
        1.0 - off_mass, off_mass=off_mass, verdict=verdict,
        off_mass_per_point=off_per_point, off_mass_per_dim=off_per_dim,
        permutation=permutation, share=share_mean,
        mean_abs_jacobian=np.abs(scaled).mean(0), jacobian=jac,
        matched_derivative=median, signs=signs, sign_consistency=sign_consistency,
        standardize=standardize, num_points=P,
    )
