import warnings

import pytest
import torch
from pyro import poutine

from pyrocrl.models import IVAE, VAE, IdentifiabilityWarning
from tests.models.sites import latent_and_guided_sites


@pytest.fixture
def data():
    x = torch.randn(64, 4)
    u = torch.arange(64) % 9
    return x, u


def build(kind):
    return VAE(4, 2) if kind == "vae" else IVAE(4, 2, num_domains=9)


@pytest.mark.parametrize("kind", ["vae", "ivae"])
def test_guide_covers_every_latent_site(kind, data):
    model = build(kind)
    model_trace, latent, guided = latent_and_guided_sites(model, *data)
    assert latent == guided == {"z"}
    assert model_trace.nodes["x"]["is_observed"]
    assert model_trace.nodes["z"]["value"].shape == (64, 2)


@pytest.mark.parametrize("kind", ["vae", "ivae"])
def test_data_plate_scales_minibatch_to_num_data(kind, data):
    model = build(kind)
    guide_trace = poutine.trace(model.guide).get_trace(*data)
    replayed = poutine.replay(model.model, trace=guide_trace)
    full = poutine.trace(replayed).get_trace(*data).log_prob_sum()
    scaled = poutine.trace(replayed).get_trace(*data, num_data=640).log_prob_sum()
    torch.testing.assert_close(scaled, 10 * full)


@pytest.mark.parametrize("kind", ["vae", "ivae"])
def test_encode_returns_posterior_mean_without_grad(kind, data):
    model = build(kind)
    z = model.encode(*data)
    assert z.shape == (64, 2) and not z.requires_grad
    torch.testing.assert_close(z, model.posterior(*data)[0].detach())
    assert model.training  # encode restores the mode


def test_parameters_stay_in_the_module_not_the_param_store(data):
    import pyro

    a, b = IVAE(4, 2, 9), IVAE(4, 2, 9)
    with torch.no_grad():
        a.prior_loc_unconstrained.fill_(3.0)
    poutine.trace(b.model).get_trace(*data)
    assert torch.all(b.prior_loc == 0.0), "two models shared a parameter"
    assert len(pyro.get_param_store()) == 0


def test_ivae_prior_is_conditional_and_vae_prior_isotropic(data):
    ivae = IVAE(4, 2, 9)
    with torch.no_grad():
        ivae.prior_scale_unconstrained[3].fill_(1.0)  # scale e for domain 3
    x, u = data
    prior = ivae.prior(u, x)
    assert torch.allclose(prior.base_dist.scale[u == 3], torch.tensor(torch.e))
    assert torch.allclose(prior.base_dist.scale[u != 3], torch.tensor(1.0))
    # the isotropic prior is rotation invariant: the root of the VAE's non-identifiability
    vae_prior = VAE(4, 2).prior(None, x)
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]])
    z = torch.randn(64, 2)
    torch.testing.assert_close(vae_prior.log_prob(z), vae_prior.log_prob(z @ rotation.T))


@pytest.mark.parametrize("kind", ["vae", "ivae"])
@pytest.mark.parametrize("x, match", [
    (torch.randn(64, 5), r"x must have shape \(N, obs_dim=4\)"),
    (torch.randn(64), r"x must have shape"),
    (torch.full((64, 4), float("nan")), "NaN"),
    (torch.zeros(64, 4, dtype=torch.long), "floating-point"),
])
def test_bad_x(kind, x, match, data):
    with pytest.raises((ValueError, TypeError), match=match):
        build(kind).check_data(x, data[1])


@pytest.mark.parametrize("u, error, match", [
    (None, ValueError, "u is required"),
    (torch.arange(64) % 12, ValueError, r"u must take values in \[0, num_domains=9\)"),
    (-(torch.arange(64) % 9), ValueError, "u must take values"),
    (torch.zeros(64), TypeError, "integer"),
    (torch.zeros(10, dtype=torch.long), ValueError, r"u must have shape \(N,\) = \(64,\)"),
])
def test_bad_u(u, error, match, data):
    with pytest.raises(error, match=match):
        IVAE(4, 2, 9).check_data(data[0], u)


def test_too_few_domains_warns(data):
    with pytest.warns(IdentifiabilityWarning, match="2n\\+1 = 5"):
        IVAE(4, 2, num_domains=3)
    model = IVAE(4, 2, num_domains=9)
    with pytest.warns(IdentifiabilityWarning, match="2 domains"):
        model.check_training_data(data[0], torch.arange(64) % 2)


def test_variance_only_prior_needs_n_plus_1_domains(data):
    """With the prior means fixed only the variances vary across domains; they pin the axes
    once their changes have rank n, i.e. from n + 1 domains, not 2n + 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", IdentifiabilityWarning)
        model = IVAE(4, 2, num_domains=3, learn_prior_mean=False)  # n + 1 = 3: enough
        model.check_training_data(data[0], torch.arange(64) % 3)
    with pytest.warns(IdentifiabilityWarning, match=r"rank n, i.e. at least n\+1 = 3"):
        IVAE(4, 2, num_domains=2, learn_prior_mean=False)
    with pytest.warns(IdentifiabilityWarning, match=r"n\+1 = 3"):
        model.check_training_data(data[0], torch.arange(64) % 2)


@pytest.mark.parametrize("args, match", [((0, 2), "obs_dim"), ((4, 2.0), "latent_dim")])
def test_bad_constructor_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        VAE(*args)
    with pytest.raises(ValueError, match="num_domains"):
        IVAE(4, 2, num_domains=0)


@pytest.mark.parametrize("kind", ["vae", "ivae"])
def test_full_covariance_posterior_starts_mean_field_and_learns_correlations(kind, data):
    import pyro.distributions as dist

    model = VAE(4, 3, covariance="full") if kind == "vae" else IVAE(4, 3, 9, covariance="full")
    q = model.posterior_distribution(*data)
    assert isinstance(q, dist.MultivariateNormal)
    assert q.batch_shape == (64,) and q.event_shape == (3,)
    assert torch.all(q.scale_tril.tril(-1) == 0), "a full posterior must start mean-field"
    # give the strictly-lower Cholesky outputs a value: the marginal scales follow L L^T
    with torch.no_grad():
        model.encoder[-1].bias[6:].copy_(torch.tensor([0.3, -0.2, 0.5]))
    q = model.posterior_distribution(*data)
    loc, scale = model.posterior(*data)
    torch.testing.assert_close(loc, q.loc)
    torch.testing.assert_close(scale, q.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt())
    assert q.covariance_matrix[0, 1, 0].abs() > 1e-3
    trace = poutine.trace(model.guide).get_trace(*data)
    assert trace.nodes["z"]["fn"].event_shape == (3,)


def test_diagonal_posterior_matches_its_distribution(data):
    model = IVAE(4, 2, 9)
    q = model.posterior_distribution(*data)
    loc, scale = model.posterior(*data)
    torch.testing.assert_close(q.base_dist.loc, loc)
    torch.testing.assert_close(q.base_dist.scale, scale)


def test_bad_covariance_is_named():
    with pytest.raises(ValueError, match="covariance must be 'diagonal' or 'full', got 'ful'"):
        IVAE(4, 2, 9, covariance="ful")
