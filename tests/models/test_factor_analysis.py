import itertools
import math
import warnings

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats

from pyrocrl.diagnostics import affine_r2, mcc
from pyrocrl.inference import fit_svi
from pyrocrl.models.base import IdentifiabilityWarning
from pyrocrl.models.latent_dag import FactorAnalysis
from pyrocrl.simulate.factors import factor_model

ANCHORS = [[0, 1], [2, 3]]  # for FactorAnalysis(6, 2)


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: intra-op threads only add overhead (a lot, on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def x():
    return torch.randn(64, 6)


def latent_sites(trace):
    return {name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and not poutine.util.site_is_subsample(site)}


def test_guide_covers_every_latent_site(x):
    fa = FactorAnalysis(6, 2, anchors=ANCHORS)
    model_trace = poutine.trace(fa.model).get_trace(x)
    guide_trace = poutine.trace(fa.guide).get_trace(x)
    assert latent_sites(model_trace) == latent_sites(guide_trace) == {"W", "mu", "psi", "z"}
    assert model_trace.nodes["x"]["is_observed"]
    assert model_trace.nodes["z"]["value"].shape == (64, 2)
    assert model_trace.nodes["W"]["value"].shape == (6, 2)
    marginal_trace = poutine.trace(fa.marginal_model).get_trace(x)
    assert latent_sites(marginal_trace) == {"W", "mu", "psi"}


def test_data_plate_scales_local_sites_only(x):
    fa = FactorAnalysis(6, 2, anchors=ANCHORS)
    guide_trace = poutine.trace(fa.guide).get_trace(x)
    replayed = poutine.replay(fa.model, trace=guide_trace)
    full = poutine.trace(replayed).get_trace(x)
    scaled = poutine.trace(replayed).get_trace(x, num_data=640)
    full.compute_log_prob()
    scaled.compute_log_prob()
    for name in ("z", "x"):
        torch.testing.assert_close(scaled.nodes[name]["log_prob_sum"],
                                   10 * full.nodes[name]["log_prob_sum"])
    for name in ("W", "mu", "psi"):
        torch.testing.assert_close(scaled.nodes[name]["log_prob_sum"],
                                   full.nodes[name]["log_prob_sum"])


def test_exact_guide_makes_the_elbo_the_marginal_likelihood(x):
    """log p(x, z, g) - log q(z | x) = log p(x, g) for every draw z (zero-variance ELBO),
    checked against the marginal model (Woodbury, an independent computation)."""
    fa = FactorAnalysis(6, 2, anchors=ANCHORS)
    with torch.no_grad():
        fa.noise_variance = torch.rand(6) + 0.2
        fa.mean.copy_(torch.randn(6))
    marginal = None
    for _ in range(3):
        guide_trace = poutine.trace(fa.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(fa.model, trace=guide_trace)).get_trace(x)
        elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
        if marginal is None:
            replayed = poutine.replay(fa.marginal_model, trace=guide_trace)
            marginal = poutine.trace(replayed).get_trace(x).log_prob_sum()
        torch.testing.assert_close(elbo, marginal, rtol=1e-5, atol=1e-3)


def test_encode_is_the_gaussian_conditional_mean(x):
    fa = FactorAnalysis(6, 2, anchors=ANCHORS)
    with torch.no_grad():
        fa.noise_variance = torch.rand(6) + 0.2
        fa.mean.copy_(torch.randn(6))
    w = torch.as_tensor(fa.loadings(), dtype=torch.float64)
    psi = fa.noise_variance.detach().double()
    mu = fa.mean.detach().double()
    # E[z | x] = Cov(z, x) Cov(x)^{-1} (x - mu) with Cov(z, x) = W^T, Cov(x) = W W^T + Psi
    expected = (x.double() - mu) @ torch.linalg.solve(w @ w.T + torch.diag(psi), w)
    z = fa.encode(x)
    assert z.shape == (64, 2) and not z.requires_grad
    torch.testing.assert_close(z.double(), expected, rtol=1e-4, atol=1e-5)
    assert fa.training  # encode restores the mode


def test_without_anchors_the_model_is_rotation_invariant(x):
    fa = FactorAnalysis(6, 2)
    w = torch.randn(6, 2)
    angle = 0.7
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)],
                             [math.sin(angle), math.cos(angle)]])

    def log_joint(loadings):
        conditioned = poutine.condition(fa.marginal_model, data={
            "W": loadings, "mu": torch.zeros(6), "psi": torch.full((6,), 0.3)})
        return poutine.trace(conditioned).get_trace(x).log_prob_sum()

    torch.testing.assert_close(log_joint(w @ rotation), log_joint(w))


def test_anchors_mask_and_sign_the_loadings():
    fa = FactorAnalysis(6, 2, anchors=ANCHORS)
    draws = fa.loadings_prior().sample((500,))
    assert torch.all(draws[:, [0, 1], 1] == 0) and torch.all(draws[:, [2, 3], 0] == 0)
    assert torch.all(draws[:, 0, 0] > 0) and torch.all(draws[:, 2, 1] > 0)  # sign-fixing
    assert (draws[:, 1, 0] < 0).any() and (draws[:, 4:] < 0).any()  # the rest are free
    # the loading prior is Normal(0, 1) on free entries, HalfNormal(1) on the sign-fixing ones
    w = draws[0]
    expected = (stats.norm.logpdf(w[fa.free_mask].numpy()).sum()
                + 2 * math.log(2.0))
    assert fa.loadings_prior().log_prob(w).item() == pytest.approx(expected, rel=1e-5)
    # the fit moves in sign-free coordinates: negating a column's raw entries changes nothing
    transform = fa.loadings_transform()
    u = torch.randn(int(fa.free_mask.sum()))
    column = fa.free_mask.flatten().nonzero().squeeze(-1) % 2  # column of each free entry
    u_flipped = torch.where(column == 0, -u, u)
    torch.testing.assert_close(transform(u_flipped), transform(u))
    assert bool(fa.loadings_prior().support.check(transform(u)))
    torch.testing.assert_close(transform(transform.inv(transform(u))), transform(u))


def test_without_positive_anchors_signs_are_free():
    fa = FactorAnalysis(6, 2, anchors=ANCHORS, positive_anchors=False)
    draws = fa.loadings_prior().sample((500,))
    assert (draws[:, 0, 0] < 0).any()
    assert torch.all(draws[:, [0, 1], 1] == 0)


def test_parameters_stay_in_the_module_not_the_param_store(x):
    a, b = FactorAnalysis(6, 2), FactorAnalysis(6, 2)
    with torch.no_grad():
        a.mean.fill_(3.0)
    poutine.trace(b.guide).get_trace(x)
    assert torch.all(b.mean == 0.0), "two models shared a parameter"
    assert len(pyro.get_param_store()) == 0


def test_load_posterior_mean_sets_the_point_estimates(x):
    fa = FactorAnalysis(6, 2, anchors=ANCHORS)
    draws = {"W": fa.loadings_prior().sample((2, 10)), "mu": torch.randn(2, 10, 6),
             "psi": torch.rand(2, 10, 6) + 0.1}
    assert fa.load_posterior_mean(draws) is fa
    np.testing.assert_allclose(fa.loadings(), draws["W"].mean((0, 1)).numpy(), atol=1e-6)
    torch.testing.assert_close(fa.noise_variance.detach(), draws["psi"].mean((0, 1)))
    with pytest.raises(ValueError, match="lack site 'psi'"):
        fa.load_posterior_mean({"W": draws["W"], "mu": draws["mu"]})
    with pytest.raises(ValueError, match=r"samples\['mu'\] must have shape"):
        fa.load_posterior_mean({**draws, "mu": torch.randn(10, 5)})
    with pytest.raises(ValueError, match="anchor mask"):
        fa.load_posterior_mean({**draws, "W": torch.randn(10, 6, 2)})


# -- identifiability: anchors recover the factors, without them only the subspace -----------
def fit(ds, anchors, seed, num_steps=300):
    """MAP fit on 80% of ``ds``; returns the model and the held-out 20%."""
    train, test = ds.split(0.8, seed=0)
    pyro.set_rng_seed(seed)  # the initial loadings
    fa = FactorAnalysis(ds.x.shape[1], ds.z.shape[1], anchors=anchors)
    fit_svi(fa, train.x, num_steps=num_steps, batch_size=None, learning_rate=0.05, seed=seed,
            progress=False, device="cpu")
    return fa, test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anchors_recover_factors_and_loadings(seed):
    ds = factor_model(num_factors=3, obs_dim=12, anchors_per_factor=2, noise=0.1, seed=seed)
    anchors, truth = ds.info["anchors"], ds.info["loadings"]
    fa, test = fit(ds, anchors, seed)
    score = mcc(test.z, fa.encode(test.x))
    assert score >= 0.95
    # no ambiguity left: factor k is the one its anchors name ...
    np.testing.assert_array_equal(score.permutation, [0, 1, 2])
    # ... and its sign is the sign of its first anchor's true loading
    sign = np.sign(truth[[a[0] for a in anchors], [0, 1, 2]])
    np.testing.assert_array_equal(score.signs, sign)
    np.testing.assert_allclose(fa.loadings(), truth * sign, atol=0.1)
    np.testing.assert_allclose(fa.noise_variance.detach().numpy(), 0.01, rtol=0.5)


@pytest.mark.parametrize("anchored", [True, False])
def test_without_anchors_fits_differ_by_a_rotation(anchored):
    """Three fits of one data set from different initial loadings. With anchors they agree;
    without, they span the same factor subspace (affine R^2 ~ 1, same W W^T) but their
    factors are rotated against each other and against the truth (seed 002, section 3.1)."""
    ds = factor_model(num_factors=3, obs_dim=12, anchors_per_factor=2, noise=0.1, seed=0)
    fits = [fit(ds, ds.info["anchors"] if anchored else None, seed) for seed in (0, 1, 2)]
    test = fits[0][1]
    codes = [fa.encode(test.x) for fa, _ in fits]
    between = [float(mcc(a, b)) for a, b in itertools.combinations(codes, 2)]
    to_truth = [float(mcc(test.z, z)) for z in codes]
    for fa, _ in fits:
        assert affine_r2(test.z, fa.encode(test.x)) > 0.99
    covariances = [fa.loadings() @ fa.loadings().T for fa, _ in fits]
    for cov in covariances[1:]:
        np.testing.assert_allclose(cov, covariances[0], atol=0.05)
    if anchored:
        assert min(between) > 0.99 and min(to_truth) > 0.99
    else:
        assert np.mean(between) < 0.95 and min(between) < 0.9
        assert np.mean(to_truth) < 0.95


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("anchors, match", [
    ([[0], [6]], r"feature 6, outside \[0, obs_dim=6\)"),
    ([[0], [-1]], "outside"),
    ([[0, 1], [1, 2]], "feature 1 anchors both factor 0 and factor 1"),
    ([[0, 1], []], "factor 1 has no anchor feature"),
    ({0: [0, 1]}, r"factors \[1\] have no anchor feature"),
    ({0: [0], 2: [1]}, "keys must be factor indices"),
    ([[0, 1]], "one list of features per factor"),
    ([[0], [1.5]], "int feature indices"),
    ("01", "must be a list"),
])
def test_bad_anchors(anchors, match):
    with pytest.raises(ValueError, match=match):
        FactorAnalysis(6, 2, anchors=anchors)


def test_anchor_formats_are_equivalent():
    a = FactorAnalysis(6, 2, anchors=[[0, 1], 2])
    b = FactorAnalysis(6, 2, anchors={1: 2, 0: (0, 1)})
    assert a.anchors == b.anchors == [[0, 1], [2]]
    assert torch.equal(a.free_mask, b.free_mask) and torch.equal(a.positive_mask,
                                                                 b.positive_mask)


@pytest.mark.parametrize("kwargs, match", [
    (dict(prior_scale=0.0), "prior_scale"),
    (dict(init_scale=-1.0), "init_scale"),
])
def test_bad_scales(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FactorAnalysis(6, 2, **kwargs)


@pytest.mark.parametrize("bad, match", [
    (torch.randn(10, 5), r"shape \(N, obs_dim=6\)"),
    (torch.randn(10), r"shape \(N, obs_dim=6\)"),
    (torch.full((10, 6), float("nan")), "NaN"),
])
def test_bad_data(bad, match):
    fa = FactorAnalysis(6, 2, anchors=ANCHORS)
    with pytest.raises(ValueError, match=match):
        fa.encode(bad)
    with pytest.raises(ValueError, match=match):
        fit_svi(fa, bad, num_steps=1, progress=False)


def test_unidentifiable_settings_warn():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FactorAnalysis(5, 2, anchors=[[0, 1], [2]])  # factor 1: features 2, 3, 4
        FactorAnalysis(6, 2, anchors=[[0, 1, 2, 3], [4, 5]])  # factor 1: features 4, 5
        FactorAnalysis(4, 2)  # (4 - 2)^2 < 4 + 2
    messages = [str(w.message) for w in caught if w.category is IdentifiabilityWarning]
    assert len(messages) == 2
    assert "factors [1] can load on fewer than three features" in messages[0]
    assert "Ledermann" in messages[1]
