import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrocrl.inference.mcmc import fit_mcmc, mcmc_to_inference_data
from pyrocrl.models.latent_dag import FactorAnalysis
from pyrocrl.simulate.factors import factor_model


@pytest.fixture(autouse=True)
def one_thread():
    """NUTS on tiny models is Python-bound: intra-op threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def normal_mean(x):
    """Conjugate toy model: loc ~ N(0, 1), x_i ~ N(loc, 1); posterior N(sum x / (n + 1),
    1 / (n + 1))."""
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


class OnlyModel:
    """An object with ``model`` but no ``marginal_model``."""

    def model(self, x):
        normal_mean(x)


def arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def test_nuts_matches_the_conjugate_posterior():
    x = torch.randn(20) + 1.5
    mcmc = fit_mcmc(normal_mean, x, num_samples=400, warmup_steps=200, progress=False)
    draws = mcmc.get_samples()["loc"]
    n = x.shape[0]
    assert draws.shape == (400,)
    assert abs(draws.mean().item() - x.sum().item() / (n + 1)) < 0.3 * (n + 1) ** -0.5
    assert draws.std().item() == pytest.approx((n + 1) ** -0.5, rel=0.2)
    assert mcmc.run_time_s > 0


def test_target_falls_back_to_model_and_chains_run_sequentially():
    x = torch.randn(10)
    mcmc = fit_mcmc(OnlyModel(), x, num_samples=30, warmup_steps=50, num_chains=2, seed=3,
                    progress=False)
    grouped = mcmc.get_samples(group_by_chain=True)["loc"]
    assert grouped.shape == (2, 30)
    assert not torch.equal(grouped[0], grouped[1])
    assert (grouped.std(1) > 0).all()
    again = fit_mcmc(OnlyModel(), x, num_samples=30, warmup_steps=50, num_chains=2, seed=3,
                     progress=False)
    assert torch.equal(again.get_samples(group_by_chain=True)["loc"], grouped), \
        "same seed, different draws"


def test_inference_data_has_posterior_log_likelihood_and_observations():
    x = torch.randn(10)
    mcmc = fit_mcmc(normal_mean, x, num_samples=25, warmup_steps=50, num_chains=2,
                    progress=False)
    idata = mcmc_to_inference_data(mcmc)
    assert {"posterior", "log_likelihood", "sample_stats", "observed_data"} <= set(
        idata.groups())
    assert idata.posterior["loc"].shape == (2, 25)
    assert idata.log_likelihood["x"].shape == (2, 25, 10)
    summary = arviz().summary(idata)
    assert "r_hat" in summary.columns


def test_factor_analysis_marginal_model_smoke():
    """The default target is the marginal model: only the globals are sampled, draws obey
    the anchor mask and signs, ArviZ gets per-datum log-likelihoods, and the posterior means
    can be loaded into the model."""
    ds = factor_model(num_factors=2, obs_dim=6, num_samples=100, noise=0.3, seed=1)
    fa = FactorAnalysis(6, 2, anchors=ds.info["anchors"])
    mcmc = fit_mcmc(fa, ds.x, num_samples=20, warmup_steps=50, progress=False,
                    max_tree_depth=4)  # cheap, not converged
    draws = mcmc.get_samples()
    assert set(draws) == {"W", "mu", "psi"}
    assert draws["W"].shape == (20, 6, 2) and draws["psi"].shape == (20, 6)
    support = fa.loadings_prior().support
    assert bool(support.check(draws["W"]).all())
    idata = mcmc_to_inference_data(mcmc)
    assert idata.posterior["W"].shape == (1, 20, 6, 2)
    assert idata.log_likelihood["x"].shape == (1, 20, 100)
    fa.load_posterior_mean(draws)
    np.testing.assert_allclose(fa.loadings(), draws["W"].mean(0).numpy(), atol=1e-6)
    assert fa.encode(ds.x).shape == (100, 2)


@pytest.mark.slow
def test_nuts_on_anchored_factor_analysis_converges_to_the_truth():
    """K=2, D=6, N=300, two chains of 200 + 200: every free loading has r_hat < 1.05 and a
    posterior mean within 4 posterior sds (and 0.15) of the truth, signed by the anchors.
    20-40 s on one CPU core, depending on load."""
    ds = factor_model(num_factors=2, obs_dim=6, num_samples=300, noise=0.3, seed=1)
    anchors, truth = ds.info["anchors"], ds.info["loadings"]
    fa = FactorAnalysis(6, 2, anchors=anchors)
    mcmc = fit_mcmc(fa, ds.x, num_samples=200, warmup_steps=200, num_chains=2, seed=0,
                    progress=False, full_mass=True, jit_compile=True)
    idata = mcmc_to_inference_data(mcmc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # r_hat of the fixed zeros is NaN
        summary = arviz().summary(idata, var_names=["W"])
    free = fa.free_mask.numpy().flatten()
    assert summary["r_hat"].to_numpy()[free].max() < 1.05
    assert summary["ess_bulk"].to_numpy()[free].min() > 100
    assert int(idata.sample_stats["diverging"].sum()) == 0
    draws = mcmc.get_samples()["W"].numpy()
    sign = np.sign(truth[[a[0] for a in anchors], [0, 1]])
    error = np.abs(draws.mean(0) - truth * sign)
    assert error.max() < 0.15
    assert np.all(error[fa.free_mask.numpy()] < 4 * draws.std(0)[fa.free_mask.numpy()])


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=0), "num_samples"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(num_chains=0), "num_chains"),
    (dict(chain_method="vectorized"), "chain_method"),
    (dict(target_accept_prob=1.0), "target_accept_prob"),
    (dict(target="guide_model"), "target='guide_model' is not a method"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_mcmc(OnlyModel(), torch.randn(5), progress=False, **kwargs)


def test_bad_model_and_data():
    with pytest.raises(TypeError, match="must be a Pyro program"):
        fit_mcmc(object(), torch.randn(5), progress=False)
    with pytest.raises(TypeError, match="data argument 0"):
        fit_mcmc(normal_mean, [1.0, 2.0], progress=False)
    fa = FactorAnalysis(6, 2, anchors=[[0, 1], [2, 3]])
    with pytest.raises(ValueError, match=r"shape \(N, obs_dim=6\)"):
        fit_mcmc(fa, torch.randn(10, 5), progress=False)


def test_a_chain_that_never_moves_is_reported():
    with pytest.warns(RuntimeWarning, match=r"chain\(s\) \[0\] never moved"):
        fit_mcmc(normal_mean, torch.randn(10), num_samples=25, warmup_steps=25, seed=0,
                 progress=False)


def test_inference_data_needs_a_run_mcmc():
    with pytest.raises(TypeError, match="pyro.infer.MCMC"):
        mcmc_to_inference_data({"loc": torch.zeros(3)})
    kernel = pyro.infer.NUTS(normal_mean)
    with pytest.raises(ValueError, match="no samples"):
        mcmc_to_inference_data(pyro.infer.MCMC(kernel, num_samples=5))
