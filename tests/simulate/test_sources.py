import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyrocrl import simulate


def small(**kw):
    args = dict(num_latents=3, num_domains=7, samples_per_domain=200, seed=0)
    args.update(kw)
    return simulate.nonstationary_sources(**args)


def test_shapes_and_domains():
    ds = small(obs_dim=5)
    assert ds.x.shape == (1400, 5) and ds.z.shape == (1400, 3) and ds.u.shape == (1400,)
    assert ds.u.dtype == torch.long
    assert torch.equal(torch.bincount(ds.u), torch.full((7,), 200))
    assert ds.graph is None and ds.info["seed"] == 0


def test_deterministic_given_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = small(seed=4)
    assert torch.equal(torch.rand(3), expected), "the simulator consumed the caller's RNG"
    b = small(seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)
    assert not torch.equal(a.x, small(seed=5).x)


def test_standardized_and_noise_free_by_default():
    ds = small()
    np.testing.assert_allclose(ds.x.std(0).numpy(), 1.0, atol=1e-5)
    # x is exactly g(z) with the stored mixing
    torch.testing.assert_close(ds.info["mixing"](ds.z), ds.x)


def test_domain_variances_match_the_process():
    ds = small(samples_per_domain=20000, num_domains=3)
    scale = ds.info["process"].scale
    for u in range(3):
        empirical = ds.z[ds.u == u].std(0)
        torch.testing.assert_close(empirical, scale[u], rtol=0.03, atol=0)
    low, high = ds.info["variance_range"]
    assert (scale**2 >= low).all() and (scale**2 <= high).all()


@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
def test_true_density_matches_scipy(noise):
    ds = small(noise=noise, mean_range=(-1.0, 1.0))
    process = ds.info["process"]
    loc, scale = process.loc[ds.u].numpy(), process.scale[ds.u].numpy()
    z = ds.z.numpy()
    if noise == "gaussian":
        expected = stats.norm.logpdf(z, loc, scale).sum(-1)
    else:
        expected = stats.laplace.logpdf(z, loc, scale / math.sqrt(2)).sum(-1)
    np.testing.assert_allclose(process.log_prob(ds.z, ds.u).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(ds.z.std(0).numpy().mean(), np.sqrt(np.mean(scale**2)),
                               rtol=0.1)


def test_observation_noise_is_added():
    ds = small(observation_noise=0.1)
    residual = ds.x - ds.info["mixing"](ds.z)
    assert residual.std().item() == pytest.approx(0.1, rel=0.1)


@pytest.mark.parametrize("name", sorted(simulate.MIXINGS))
@pytest.mark.parametrize("weights", ["condition", "orthogonal"])
def test_mixings_are_injective(name, weights):
    g = simulate.make_mixing(name, 3, 6, seed=1, weights=weights)
    z = torch.randn(500, 3)
    torch.testing.assert_close(g.inverse(g(z)), z, atol=1e-4, rtol=1e-4)
    jac = torch.func.vmap(torch.func.jacrev(g))(z)  # (500, 6, 3)
    assert (torch.linalg.matrix_rank(jac) == 3).all()


def test_condition_screening_bounds_condition_numbers():
    g = simulate.make_mixing("leaky_mlp", 4, 4, seed=0, num_layers=3, weights="condition")
    rng = np.random.default_rng(0)
    reference = np.quantile(np.linalg.cond(rng.standard_normal((2000, 4, 4))), 0.3)
    assert all(np.linalg.cond(w.numpy()) <= reference for w in g.weights)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_latents": 0}, "num_latents"),
    ({"num_domains": 2.5}, "num_domains"),
    ({"obs_dim": 2}, "obs_dim"),
    ({"noise": "cauchy"}, "noise"),
    ({"variance_range": (0.0, 1.0)}, "variance_range"),
    ({"mixing": "spline"}, "mixing"),
    ({"observation_noise": -1.0}, "observation_noise"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_seed_must_be_int():
    with pytest.raises(TypeError, match="seed"):
        small(seed=1.5)


def test_split_is_a_seeded_partition():
    ds = small()
    train, test = ds.split(0.75, seed=3)
    assert len(train) == 1050 and len(test) == 350
    rows = torch.cat([train.z, test.z])
    assert torch.unique(rows, dim=0).shape[0] == len(ds)
    again, _ = ds.split(0.75, seed=3)
    assert torch.equal(again.x, train.x) and torch.equal(again.u, train.u)
    # pairs stay aligned: x is still g(z)
    torch.testing.assert_close(ds.info["mixing"](test.z), test.x)
    with pytest.raises(ValueError, match="frac"):
        ds.split(1.0)


def test_log_volume_is_the_closed_form_of_a_square_leaky_mlp():
    # J = W3 D2 W2 D1 W1 with D_l the diagonal slopes, so log|det J| = sum_l log|det W_l|
    # + log(slope) * (number of negative pre-activations)
    g = simulate.make_mixing("leaky_mlp", 3, 3, seed=2, num_layers=3)
    z = torch.randn(300, 3, dtype=torch.float64)
    expected = sum(torch.linalg.slogdet(w.double())[1] for w in g.weights)
    h = z
    for w in g.weights[:-1]:
        h = h @ w.double().T
        expected = expected + math.log(g.negative_slope) * (h < 0).sum(-1).double()
        h = torch.nn.functional.leaky_relu(h, g.negative_slope)
    torch.testing.assert_close(g.log_volume(z), expected)
    # a tall linear mixing: the volume factor of its columns, the same at every point
    a = simulate.make_mixing("linear", 3, 6, seed=2)
    volume = 0.5 * torch.linalg.slogdet(a.weights[0].double().T @ a.weights[0].double())[1]
    torch.testing.assert_close(a.log_volume(z), volume.expand(300))


def test_exact_log_prob_of_a_linear_mixing_is_the_gaussian_of_x():
    # independent reference: x | u ~ N(0, A diag(sigma_u^2) A^T) for x = A z
    ds = small(mixing_layers=1)
    a = ds.info["mixing"].weights[0].double()
    scale = ds.info["process"].scale.double()[ds.u]
    cov = a @ torch.diag_embed(scale**2) @ a.T
    reference = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov)
    torch.testing.assert_close(simulate.exact_log_prob(ds),
                               reference.log_prob(ds.x.double()), rtol=1e-4, atol=1e-4)
    _, test = ds.split(0.5, seed=0)
    assert simulate.exact_log_prob(test).shape == (len(test),)


def test_exact_log_prob_refuses_noisy_data():
    with pytest.raises(ValueError, match="observation_noise=0.1"):
        simulate.exact_log_prob(small(observation_noise=0.1))
