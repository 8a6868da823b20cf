import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrocrl import simulate
from pyrocrl.inference import fit_svi, guide_khat, to_inference_data
from pyrocrl.models import IVAE

from .toy_models import Conjugate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


@pytest.fixture(scope="module")
def fitted():
    ds = simulate.nonstationary_sources(num_latents=2, num_domains=6, samples_per_domain=100,
                                        seed=0)
    pyro.set_rng_seed(0)
    model = IVAE(2, 2, 6)
    fit_svi(model, ds.x, ds.u, num_steps=200, learning_rate=3e-3, progress=False)
    test = ds.subset(torch.arange(0, 600, 15))  # 40 points from every domain
    return model, test.x, test.u


def test_groups_shapes_and_dims(fitted):
    model, x, u = fitted
    idata = to_inference_data(model, x, u, num_samples=30)
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "log_likelihood",
                                   "observed_data"}
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "latent")
    assert idata.posterior["z"].shape == (1, 30, 40, 2)
    assert idata.posterior_predictive["x"].shape == (1, 30, 40, 2)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "obs")
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.numpy())


def test_log_likelihood_matches_an_independent_computation(fitted):
    model, x, u = fitted
    idata = to_inference_data(model, x, u, num_samples=10)
    z = torch.as_tensor(idata.posterior["z"].values[0])  # (10, 40, 2)
    with torch.no_grad():
        expected = dist.Normal(model.decoder(z), model.obs_scale).log_prob(x).sum(-1)
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0], expected.numpy(), rtol=1e-5)


def test_posterior_draws_follow_the_guide(fitted):
    model, x, u = fitted
    idata = to_inference_data(model, x, u, num_samples=2000)
    loc, scale = (t.detach().numpy() for t in model.posterior(x, u))
    draws = idata.posterior["z"].values[0]
    np.testing.assert_allclose(draws.mean(0), loc, atol=4 * scale.max() / np.sqrt(2000) + 1e-3)
    np.testing.assert_allclose(draws.std(0), scale, rtol=0.1)


def test_arviz_functions_work(fitted):
    model, x, u = fitted
    idata = to_inference_data(model, x, u, num_samples=20, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata, var_names=["z"], kind="stats")
        loo = az.loo(idata)
        az.plot_ppc(idata, num_pp_samples=5)
    assert len(summary) == 80 and np.isfinite(loo.elpd_loo)


def test_same_seed_same_draws_and_caller_rng_untouched(fitted):
    model, x, u = fitted
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    a = to_inference_data(model, x, u, num_samples=5, seed=3)
    assert torch.equal(torch.rand(2), expected)
    b = to_inference_data(model, x, u, num_samples=5, seed=3)
    np.testing.assert_array_equal(a.posterior["z"].values, b.posterior["z"].values)


def test_khat_passes_exact_guide_and_flags_a_too_narrow_one():
    x = torch.randn(20) * 1.2
    exact = guide_khat(Conjugate(width=1.0), x, num_particles=2000)
    narrow = guide_khat(Conjugate(width=0.3), x, num_particles=2000)
    assert exact.shape == (20,)
    assert np.all(exact < 0.5), "constant importance weights must look perfect"
    assert np.median(narrow) > 0.7, "a guide 3x too narrow must be flagged"


def test_bad_num_samples(fitted):
    model, x, u = fitted
    with pytest.raises(ValueError, match="num_samples"):
        to_inference_data(model, x, u, num_samples=0)
    with pytest.raises(ValueError, match="u is required"):
        to_inference_data(model, x)
