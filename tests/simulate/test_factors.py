import numpy as np
import pytest
import torch
from pyro import poutine
from scipy import stats

from pyrocrl.simulate.factors import DECODERS, factor_model


def small(**kw):
    args = dict(num_factors=3, obs_dim=12, num_samples=500, seed=0)
    args.update(kw)
    return factor_model(**args)


@pytest.mark.parametrize("decoder", DECODERS)
def test_shapes_and_info(decoder):
    ds = small(decoder=decoder)
    assert ds.x.shape == (500, 12) and ds.z.shape == (500, 3)
    assert ds.u is None and ds.graph is None
    info = ds.info
    assert info["loadings"].shape == (12, 3) and info["mask"].shape == (12, 3)
    assert info["factor_cov"].shape == (3, 3) and info["num_samples"] == 500
    assert info["decoder"] == decoder and info["seed"] == 0


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anchor_rows_load_on_their_own_factor_only(decoder, seed):
    ds = small(decoder=decoder, seed=seed, anchors_per_factor=2)
    anchors, loadings, mask = ds.info["anchors"], ds.info["loadings"], ds.info["mask"]
    assert [len(a) for a in anchors] == [2, 2, 2]
    flat = [j for a in anchors for j in a]
    assert len(set(flat)) == len(flat), "a feature anchors two factors"
    for k, features in enumerate(anchors):
        for j in features:
            assert np.flatnonzero(mask[j]).tolist() == [k]
            assert np.flatnonzero(loadings[j]).tolist() == [k]
    # loadings vanish outside the mask; every feature depends on something
    assert np.all(loadings[~mask] == 0) and np.all(mask.any(1))
    # every factor drives at least three features (two would leave it unidentified)
    assert np.all(mask.sum(0) >= 3)


def test_deterministic_given_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = small(seed=4)
    assert torch.equal(torch.rand(3), expected), "the simulator consumed the caller's RNG"
    b = small(seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)
    np.testing.assert_array_equal(a.info["loadings"], b.info["loadings"])
    assert not torch.equal(a.x, small(seed=5).x)


def test_linear_decoder_is_loadings_plus_noise():
    ds = small(noise=0.0)
    w = torch.as_tensor(ds.info["loadings"])
    torch.testing.assert_close(ds.x, ds.z @ w.T)
    noisy = small(noise=0.3, num_samples=20_000)
    residual = noisy.x - noisy.z @ torch.as_tensor(noisy.info["loadings"]).T
    np.testing.assert_allclose(residual.std(0).numpy(), 0.3, rtol=0.03)
    nonzero = np.abs(ds.info["loadings"][ds.info["mask"]])
    assert np.all((nonzero >= 0.5) & (nonzero <= 1.5))


def test_factor_covariance_and_marginal_match_the_samples():
    ds = small(factor_correlation=0.4, num_samples=40_000, noise=0.2)
    expected = np.full((3, 3), 0.4) + 0.6 * np.eye(3)
    np.testing.assert_allclose(ds.info["factor_cov"], expected)
    np.testing.assert_allclose(np.corrcoef(ds.z.numpy().T), expected, atol=0.02)
    # p(x) = N(0, W S W^T + s^2 I), checked against the empirical covariance and SciPy
    marginal = ds.info["process"].marginal()
    cov = marginal.covariance_matrix.numpy()
    np.testing.assert_allclose(np.cov(ds.x.numpy().T), cov, atol=0.06)
    x = ds.x[:50]
    np.testing.assert_allclose(marginal.log_prob(x).numpy(),
                               stats.multivariate_normal(np.zeros(12), cov).logpdf(x.numpy()),
                               rtol=1e-4)


def test_ground_truth_is_a_pyro_program():
    ds = small()
    trace = poutine.trace(ds.info["process"].model).get_trace(7)
    assert trace.nodes["z"]["value"].shape == (7, 3)
    assert trace.nodes["x"]["value"].shape == (7, 12)
    assert {f.name for f in trace.nodes["x"]["cond_indep_stack"]} == {"data"}


def test_masked_mlp_respects_the_mask_and_anchors_are_monotone():
    ds = small(decoder="masked_mlp", noise=0.0, num_samples=4000)
    decoder, mask = ds.info["process"].decoder, ds.info["mask"]
    z = ds.z[:20].clone()
    jac = torch.autograd.functional.jacobian(lambda v: decoder(v).sum(0), z)  # (D, N, K)
    jac = jac.permute(1, 0, 2)
    torch.testing.assert_close(jac, decoder.jacobian(z), rtol=1e-4, atol=1e-5)
    assert torch.all(jac[:, ~torch.as_tensor(mask)] == 0), "a feature saw a masked factor"
    # roughly standardized features (scaled on a separate calibration sample)
    np.testing.assert_allclose(ds.x.std(0).numpy(), 1.0, atol=0.1)
    # each anchor is a strictly monotone function of its factor
    for k, features in enumerate(ds.info["anchors"]):
        for j in features:
            rho = stats.spearmanr(ds.z[:, k].numpy(), ds.x[:, j].numpy())[0]
            assert abs(rho) > 0.9999
    # and the decoder is genuinely nonlinear
    z_, x_ = ds.z.numpy(), ds.x.numpy()
    design = np.c_[z_, np.ones(len(z_))]
    fitted = design @ np.linalg.lstsq(design, x_, rcond=None)[0]
    r2 = 1 - ((x_ - fitted) ** 2).sum(0) / ((x_ - x_.mean(0)) ** 2).sum(0)
    assert r2.mean() < 0.95


def test_no_anchors():
    ds = small(anchors_per_factor=0)
    assert ds.info["anchors"] == [[], [], []]


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_factors=0), "num_factors"),
    (dict(obs_dim=5, anchors_per_factor=2), "obs_dim=5 is too small"),
    (dict(anchors_per_factor=-1), "anchors_per_factor"),
    (dict(factor_correlation=-0.6), "factor_correlation"),
    (dict(factor_correlation=1.0), "factor_correlation"),
    (dict(noise=-0.1), "noise"),
    (dict(decoder="mlp"), "decoder"),
    (dict(loading_density=1.5), "loading_density"),
    (dict(num_samples=0), "num_samples"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)
