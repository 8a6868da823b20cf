"""The TDRL/LEAP transition prior: its density against independent computations, its
inverse, its samples, and its use as a Pyro sample site."""

import math

import pyro
import pytest
import torch

from pyrocrl.distributions import TransitionPrior
from pyrocrl.nn.transition import MonotoneInverseTransition


def random_transition(num_components=4, num_domains=3, lag=2, n=3, seed=0):
    torch.manual_seed(seed)
    r = MonotoneInverseTransition(n, lag, num_domains, hidden_dim=16, num_layers=2,
                                  num_components=num_components)
    with torch.no_grad():  # move away from the identity initialisation, gently
        r.net[-1].weight.add_(0.3 * torch.randn_like(r.net[-1].weight))
        r.net[-1].bias.add_(0.3 * torch.randn_like(r.net[-1].bias))
    return r.double()


def test_log_det_is_the_autograd_diagonal_and_the_jacobian_is_diagonal():
    r = random_transition()
    z = torch.randn(5, 3, dtype=torch.float64)
    context = torch.randn(5, 2, 3, dtype=torch.float64)
    u = torch.tensor([0, 1, 2, 1, 0])
    _, log_det = r(z, context, u)
    for p in range(5):
        jac = torch.autograd.functional.jacobian(
            lambda v, p=p: r(v.unsqueeze(0), context[p:p + 1], u[p:p + 1])[0][0], z[p])
        off_diagonal = jac - torch.diag(torch.diagonal(jac))
        assert off_diagonal.abs().max() < 1e-12  # component-wise in z_t
        assert torch.allclose(torch.diagonal(jac).log(), log_det[p], atol=1e-10)


def test_inverse_round_trip_and_monotone():
    r = random_transition()
    context = torch.randn(200, 2, 3, dtype=torch.float64)
    u = torch.randint(0, 3, (200,))
    z = 3 * torch.randn(200, 3, dtype=torch.float64)
    eps, log_det = r(z, context, u)
    assert torch.isfinite(log_det).all() and (log_det > -30).all()
    z_back = r.inverse(eps, context, u)
    assert torch.allclose(z_back, z, atol=1e-8)


def test_without_tanh_terms_it_is_a_conditional_gaussian():
    r = random_transition(num_components=0)
    prior = TransitionPrior(r, torch.tensor([0, 2]), seq_len=6)
    z = torch.randn(2, 6, 3, dtype=torch.float64)
    a, m, *_ = r.coefficients(z.unfold(-2, 3, 1).transpose(-1, -2)[..., :2, :],
                              torch.tensor([0, 2]).unsqueeze(-1).expand(2, 4))
    # eps = e^a (z - m)  <=>  z ~ N(m, e^{-2a})
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z[:, :2]).sum((-1, -2))
    expected = expected + torch.distributions.Normal(m, (-a).exp()).log_prob(z[:, 2:]).sum(
        (-1, -2))
    assert torch.allclose(prior.log_prob(z), expected, atol=1e-10)


def test_density_integrates_to_one_in_each_component():
    r = random_transition()
    grid = torch.linspace(-40, 40, 80001, dtype=torch.float64)
    context = torch.randn(1, 2, 3, dtype=torch.float64).expand(grid.numel(), 2, 3)
    u = torch.full((grid.numel(),), 1)
    eps, log_det = r(grid.unsqueeze(-1).expand(-1, 3), context, u)
    density = (torch.distributions.Normal(0.0, 1.0).log_prob(eps) + log_det).exp()
    mass = torch.trapezoid(density, grid, dim=0)
    assert torch.allclose(mass, torch.ones(3, dtype=torch.float64), atol=1e-4)


def test_samples_follow_the_transition():
    r = random_transition(num_domains=1, lag=1)
    prior = TransitionPrior(r, None, seq_len=2, batch_shape=(4000,))
    z = prior.sample()
    assert z.shape == (4000, 2, 3)
    eps, _ = r(z[:, 1:].reshape(-1, 3), z[:, :-1].reshape(-1, 1, 3), None)
    assert eps.mean(0).abs().max() < 0.06
    assert (eps.std(0) - 1).abs().max() < 0.06
    # residuals of different steps are uncorrelated with the past
    corr = torch.corrcoef(torch.stack([eps[:, 0], z[:, :-1].reshape(-1, 3)[:, 0]]))[0, 1]
    assert abs(corr) < 0.06


def test_pyro_site_and_bad_length():
    r = random_transition(num_domains=3, lag=2).float()
    u = torch.tensor([0, 1, 2])

    def model():
        with pyro.plate("data", 3):
            return pyro.sample("z", TransitionPrior(r, u, seq_len=5))

    trace = pyro.poutine.trace(model).get_trace()
    site = trace.nodes["z"]
    assert site["value"].shape == (3, 5, 3)
    assert math.isfinite(float(trace.log_prob_sum().detach()))
    with pytest.raises(ValueError, match="seq_len must be an int greater than the lag 2"):
        TransitionPrior(r, u, seq_len=2)
