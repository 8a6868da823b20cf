"""The contract every learnable pyrocrl model follows."""

from __future__ import annotations

import warnings

import pyro
import torch
from pyro.nn import PyroModule

from pyrocrl._checks import check_positive_int


class IdentifiabilityWarning(UserWarning):
    """The data or model violates a condition that identifiability theory needs."""


class LatentVariableModel(PyroModule):
    """Base class: a Pyro generative model with its amortized guide.

    Derived classes must implement

    * ``model(x, u=None, num_data=None)``: the generative program, with latent sample site
      ``"z"`` and observed site ``"x"`` inside :meth:`data_plate`;
    * ``guide(x, u=None, num_data=None)``: the amortized posterior ``q(z | x, ...)`` with the
      same latent site names;
    * ``posterior(x, u=None) -> (loc, scale)``: the parameters of ``q(z | x, ...)``;

    and may extend :meth:`check_data`. ``num_data`` is the size of the full data set when
    ``x`` is a minibatch: the ``"data"`` plate then scales the batch's log-densities by
    ``num_data / batch_size`` (:func:`pyrocrl.inference.fit_svi` passes it).

    Parameters live in the module (``model.parameters()``), never in Pyro's global param
    store, so two models in one process cannot collide.
    """

    def __init__(self, obs_dim: int, latent_dim: int):
        super().__init__()
        for name, value in [("obs_dim", obs_dim), ("latent_dim", latent_dim)]:
            check_positive_int(type(self).__name__, name, value)
        self.obs_dim = obs_dim
        self.latent_dim = latent_dim

    # -- shared pieces -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model's parameters (or, without any, its buffers) live; CPU if neither."""
        tensor = next(self.parameters(), None)
        if tensor is None:
            tensor = next(self.buffers(), None)
        return torch.device("cpu") if tensor is None else tensor.device

    @staticmethod
    def data_plate(batch_size: int, num_data: int | None = None, device=None) -> pyro.plate:
        """Plate ``"data"`` over the batch, scaled to ``num_data`` samples when given."""
        if num_data is None or num_data == batch_size:
            return pyro.plate("data", batch_size, device=device)
        index = torch.arange(batch_size, device=device)
        return pyro.plate("data", num_data, subsample=index, device=device)

    def check_data(self, x, u=None) -> None:
        """Raise ``TypeError``/``ValueError`` naming the argument if the data do not fit.

        Called by :func:`~pyrocrl.inference.fit_svi` once before training and by
        :meth:`encode`; the training step itself does not re-check.
        """
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: x must be a floating-point tensor, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[-1] != self.obs_dim:
            raise ValueError(f"{name}: x must have shape (N, obs_dim={self.obs_dim}), "
                             f"got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: x is empty")
        bad = ~torch.isfinite(x)
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name}: x contains {int(bad.sum())} NaN/inf values "
                             f"(first in row {row}); clean or impute them before fitting")
        if u is not None:
            if not isinstance(u, torch.Tensor):
                raise TypeError(f"{name}: u must be a torch.Tensor, got {type(u).__name__}")
            if u.shape[:1] != x.shape[:1] or u.ndim != 1:
                raise ValueError(f"{name}: u must have shape (N,) = ({x.shape[0]},) to match x, "
                                 f"got {tuple(u.shape)}")

    def check_domain_labels(self, x, u, num_domains: int) -> None:
        """Raise if ``u`` is not an integer tensor of ``(N,)`` domain indices in
        ``[0, num_domains)`` (call after :meth:`check_data`, which checks its shape)."""
        name = type(self).__name__
        if u is None:
            raise ValueError(f"{name}: u is required (the domain index of each sample, "
                             f"shape ({x.shape[0]},) with values in [0, {num_domains})), "
                             f"got None")
        if u.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{name}: u must be an integer tensor of domain indices, "
                            f"got {u.dtype}")
        low, high = int(u.min()), int(u.max())
        if low < 0 or high >= num_domains:
            raise ValueError(f"{name}: u must take values in [0, num_domains="
                             f"{num_domains}), got values in [{low}, {high}]")

    def check_training_data(self, *data) -> None:
        """:meth:`check_data` plus warnings that only matter for the data a model is fitted
        on (e.g. too few domains for identifiability). :func:`fit_svi` calls this."""
        self.check_data(*data)

    def posterior(self, x, u=None):  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean of the latents, ``(N, latent_dim)``, on ``x``'s device."""
        self.check_data(x, u)
        was_training = self.training
        self.eval()
        try:
            device = self.device
            loc, _ = self.posterior(x.to(device), None if u is None else u.to(device))
        finally:
            self.train(was_training)
        return loc.to(x.device)


def warn_if_too_few_domains(name: str, latent_dim: int, num_domains: int,
                            statistics: int = 2) -> None:
    r"""Warn when fewer than ``statistics * n + 1`` domains are available. ``statistics=2``:
    seed 001's sufficient variability, ``2n`` independent changes of the prior's first and
    second log-density derivatives, so ``2n + 1`` domains (a Gaussian prior whose means and
    variances both vary). ``statistics=1``: a Gaussian prior whose means are fixed and only
    variances vary fails that condition at any number of domains, but its axes are pinned
    once the changes of :math:`1/\sigma^2` have rank ``n``, which needs ``n + 1`` domains
    (tutorial 02, section 1)."""
    needed = statistics * latent_dim + 1
    if num_domains < needed:
        reason = ("the changes of the prior variances need rank n, i.e. at least n+1"
                  if statistics == 1 else
                  f"sufficient variability needs at least {statistics}n+1")
        warnings.warn(
            f"{name}: {num_domains} domains for {latent_dim} latents; {reason} = {needed} "
            f"diverse domains, so the latents may not be identifiable",
            IdentifiabilityWarning,
            stacklevel=3,
        )
