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


def test_per_step_sites_of_a_sequence_model_become_one_variable_with_a_time_dim():
    from pyrocrl.models import DeepMarkovModel

    ds = simulate.linear_gaussian(state_dim=2, obs_dim=3, num_sequences=12, seq_len=5, seed=0)
    pyro.set_rng_seed(0)
    model = DeepMarkovModel(3, 2, transition_dim=8, rnn_dim=8, emission_dim=8)
    idata = to_inference_data(model, ds.x, num_samples=15)
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "time", "latent")
    assert idata.posterior["z"].shape == (1, 15, 12, 5, 2)
    assert list(idata.posterior.data_vars) == ["z"]
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "time", "feature")
    np.testing.assert_array_equal(idata.observed_data["x"].values, ds.x.numpy())
    # one log-likelihood per sequence: the sum of its steps', recomputed here from the draws
    z = torch.as_tensor(idata.posterior["z"].values[0])  # (15, 12, 5, 2)
    with torch.no_grad():
        expected = dist.Normal(model.emitter(z), model.obs_scale).log_prob(ds.x).sum((-1, -2))
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "obs")
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0], expected.numpy(), rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(az.loo(idata).elpd_loo)  # several per-step arrays made loo refuse


def test_stack_steps_leaves_sites_that_are_not_a_run_of_steps_alone():
    from pyrocrl.inference.posterior import _stack_steps

    a = torch.zeros(4, 3)
    arrays = {"w_1": a, "w_3": a, "v_1": a, "v_2": torch.zeros(4, 2), "y": a, "y_1": a,
              "y_2": a, "s_0": a, "s_1": a}
    out = _stack_steps(arrays, axis=1)
    # gaps, unequal shapes and a clash with an existing name stay; s_0, s_1 is a run
    assert set(out) == {"w_1", "w_3", "v_1", "v_2", "y", "y_1", "y_2", "s"}
    assert out["s"].shape == (4, 2, 3)
    assert _stack_steps({"s_1": a, "s_2": a}, axis=1, total=True)["s"].shape == (4, 3)


def test_a_model_with_latents_summed_out_gets_its_exact_posterior_draws():
    """LinearGaussianSSM's model has no latent site (the Kalman filter sums z out), so the
    posterior group comes from its exact sampler: z with a time dim, centred on the RTS
    smoother's means, same seed same draws; the log-likelihood is the marginal log p(x) of
    each sequence (the same in every draw), which az.loo reads."""
    from pyrocrl.models import LinearGaussianSSM
    from pyrocrl.simulate.linear_gaussian import MATRIX_NAMES

    ds = simulate.linear_gaussian(2, 3, num_sequences=12, seq_len=8, seed=0)
    model = LinearGaussianSSM(2, 3, **{name: ds.info[name] for name in MATRIX_NAMES})
    idata = to_inference_data(model, ds.x, num_samples=400)
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "time", "latent")
    assert idata.posterior["z"].shape == (1, 400, 12, 8, 2)
    means, covs = model.smooth(ds.x)
    sd = covs.diagonal(dim1=-2, dim2=-1).sqrt().numpy()
    draws = idata.posterior["z"].values[0]
    assert np.all(np.abs(draws.mean(0) - means.numpy()) < 5 * sd / np.sqrt(400))
    np.testing.assert_allclose(draws.std(0), sd, rtol=0.2)
    expected = model.log_likelihood(ds.x).detach().numpy()
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0],
                               np.broadcast_to(expected, (400, 12)), rtol=1e-5)
    again = to_inference_data(model, ds.x, num_samples=400)
    np.testing.assert_array_equal(again.posterior["z"].values, idata.posterior["z"].values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(az.loo(idata).elpd_loo)
        assert len(az.summary(idata, var_names=["z"], kind="stats")) == 12 * 8 * 2
