"""Small models with known answers, shared by the inference tests."""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import is_validation_enabled
from pyro.nn import PyroModule, PyroParam


class Conjugate(PyroModule):
    """z ~ N(0, 1), x | z ~ N(z, 0.5^2); the exact posterior is N(0.8 x, 0.2). The guide is
    that posterior with its scale multiplied by ``width``."""

    def __init__(self, width):
        super().__init__()
        self.width = width
        self.shift = torch.nn.Parameter(torch.zeros(()))  # 0: exact; learnable for fit_svi

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.8 * x + self.shift, self.width * 0.2**0.5))

    def log_marginal(self, x):
        """The exact log p(x): x ~ N(0, 1 + 0.5^2)."""
        return dist.Normal(0.0, 1.25**0.5).log_prob(x)


class GlobalMean:
    """A plain user-written Pyro model: its one parameter lives in Pyro's global param store
    and ``model`` takes no ``num_data``."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def model(self, x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(loc, self.scale), obs=x)

    def guide(self, x):
        pass


class Exploding(PyroModule):
    """A Gaussian-mean model whose loss turns NaN on its ``explode_at``-th call (in every
    rank under DDP); ``history`` holds ``loc`` at every call."""

    def __init__(self, explode_at):
        super().__init__()
        self.loc = PyroParam(torch.zeros(()))
        self.calls, self.explode_at, self.history = 0, explode_at, []

    def model(self, x):
        self.calls += 1
        self.history.append(self.loc.detach().clone())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc, 1.0), obs=x)
        if self.calls > self.explode_at:
            pyro.factor("boom", torch.tensor(float("nan")))

    def guide(self, x):
        pass


class ValidationRecorder(PyroModule):
    """A Gaussian-mean model that records, at every call with gradients on (training steps),
    whether Pyro's distribution checks are enabled; under DDP each rank appends to
    ``out/rank{r}.txt`` (forked ranks cannot hand back a list)."""

    def __init__(self, out=None):
        super().__init__()
        self.loc = PyroParam(torch.zeros(()))
        self.out, self.checks = out, []

    def model(self, x):
        if torch.is_grad_enabled():
            self.checks.append(is_validation_enabled())
            if self.out is not None and torch.distributed.is_initialized():
                rank = torch.distributed.get_rank()
                with open(f"{self.out}/rank{rank}.txt", "a") as f:
                    f.write(f"{int(self.checks[-1])}\n")
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc, 1.0), obs=x)

    def guide(self, x):
        pass
