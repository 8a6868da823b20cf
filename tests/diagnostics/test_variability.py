import math

import numpy as np
import pytest
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam

from pyrocrl import diagnostics
from pyrocrl.diagnostics.variability import (
    jacobian_structure,
    lagged_points,
    log_density_derivatives,
    sufficient_variability,
)
from pyrocrl.models import IVAE
from pyrocrl.simulate import LeakyReLUMLPMixing, NonstationarySources, nonstationary_sources


def sources(n=3, U=7, seed=0, noise="gaussian", vary_mean=True, vary_scale=True,
            dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    loc = (4 * torch.rand(U, n, generator=g, dtype=dtype) - 2 if vary_mean
           else torch.full((U, n), 0.3, dtype=dtype))
    scale = (0.5 + 1.5 * torch.rand(U, n, generator=g, dtype=dtype) if vary_scale
             else torch.full((U, n), 1.2, dtype=dtype))
    return NonstationarySources(loc, scale, noise=noise)


def points(P=64, n=3, seed=1):
    return torch.randn(P, n, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


# -- the w vectors themselves, against closed form ----------------------------------------
def test_gaussian_derivatives_match_closed_form():
    process = sources(n=3, U=5)
    z = points(20)
    for u in range(5):
        first, second = log_density_derivatives(process, z, u, dtype=torch.float64)
        mu, s = process.loc[u], process.scale[u]
        torch.testing.assert_close(first, -(z - mu) / s ** 2, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(second, (-1 / s ** 2).expand(20, 3), rtol=1e-12, atol=1e-12)


def test_laplace_derivatives_match_closed_form():
    process = sources(n=2, U=3, noise="laplace")
    z = points(30, n=2)
    first, second = log_density_derivatives(process, z, torch.arange(30) % 3,
                                            dtype=torch.float64)
    u = torch.arange(30) % 3
    b = process.scale[u] / math.sqrt(2.0)
    torch.testing.assert_close(first, -torch.sign(z - process.loc[u]) / b)
    assert torch.all(second == 0)


def test_variance_only_gaussian_differences_are_proportional():
    # Hand computation: with a common mean mu, the first-derivative change is
    # -(z - mu) * Delta(1/s^2) = (z - mu) * (second-derivative change), so rank <= n.
    process = sources(n=3, U=9, vary_mean=False)
    z = points(40)
    w0 = log_density_derivatives(process, z, 0, dtype=torch.float64)
    for u in range(1, 9):
        w = log_density_derivatives(process, z, u, dtype=torch.float64)
        d_first, d_second = w[0] - w0[0], w[1] - w0[1]
        torch.testing.assert_close(d_second, -(1 / process.scale[u] ** 2
                                               - 1 / process.scale[0] ** 2).expand(40, 3))
        torch.testing.assert_close(d_first, (z - 0.3) * d_second)
    sv = sufficient_variability(process, z, 9)
    assert float(sv) == 0.0
    assert np.all(sv.rank == 3)
    assert "rank <= n = 3" in sv.verdict


# -- the condition ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("U", [7, 20])
def test_gaussian_with_enough_domains_holds(U, dtype):
    process = sources(n=3, U=U)
    sv = sufficient_variability(process, points(128), U, dtype=dtype)
    assert isinstance(sv, diagnostics.Score)
    assert float(sv) == 1.0
    assert np.all(sv.rank == 6) and sv.needed == 6 and sv.num_domains == U
    assert sv.sigma_min.shape == (128,) and sv.sigma_min_min > 1e-3
    assert sv.singular_values.shape == (128, 6)
    assert sv.verdict.startswith("holds at 100% of 128 points")
    assert sv.cross_derivative_ratio == 0.0


def test_stationary_domains_fail_with_rank_zero():
    process = sources(n=3, U=10, vary_mean=False, vary_scale=False)
    sv = sufficient_variability(process, points(50), 10)
    assert float(sv) == 0.0
    assert np.all(sv.rank == 0) and sv.sigma_min_median == 0.0
    assert sv.verdict.startswith("fails at all 50 points: rank 0")


def test_too_few_domains_fail():
    process = sources(n=2, U=4)  # U - 1 = 3 < 2n = 4
    sv = sufficient_variability(process, points(32, n=2), 4)
    assert float(sv) == 0.0
    assert np.all(sv.sigma_min == 0.0) and sv.singular_values.shape == (32, 3)
    assert np.all(sv.rank == 3)  # as much as three differences can give
    assert sv.verdict.startswith("fails: at most U-1 = 3 domain differences for 2n = 4")


def test_laplace_sources_fail_with_rank_at_most_n():
    process = sources(n=3, U=15, noise="laplace")
    sv = sufficient_variability(process, points(64), 15)
    assert float(sv) == 0.0
    assert sv.rank_max <= 3
    assert "Laplace" in sv.verdict


def test_rank_is_invariant_to_units_reference_and_chunking():
    process = sources(n=3, U=8)
    z = points(40)
    base = sufficient_variability(process, z, 8, dtype=torch.float64)
    c = torch.tensor([1e-3, 1.0, 1e3], dtype=torch.float64)  # z_k -> c_k z_k
    rescaled = NonstationarySources(process.loc * c, process.scale * c)
    other = sufficient_variability(rescaled, z * c, 8, dtype=torch.float64)
    np.testing.assert_array_equal(other.rank, base.rank)
    np.testing.assert_allclose(other.singular_values, base.singular_values, rtol=1e-8)
    assert float(sufficient_variability(process, z, 8, reference=5)) == 1.0
    chunked = sufficient_variability(process, z.numpy(), 8, dtype=torch.float64, chunk_size=9)
    np.testing.assert_allclose(chunked.singular_values, base.singular_values)


def test_simulator_true_process():
    ds = nonstationary_sources(num_latents=2, num_domains=9, samples_per_domain=20,
                               mean_range=(-2.0, 2.0), seed=0)
    sv = sufficient_variability(ds.info["process"], ds.z[:100], ds.info["num_domains"])
    assert float(sv) == 1.0
    # the default simulator modulates variances only: the 2n condition cannot hold
    ds = nonstationary_sources(num_latents=2, num_domains=9, samples_per_domain=20, seed=0)
    assert sufficient_variability(ds.info["process"], ds.z[:100], 9).rank_max == 2


def test_non_factorized_density_is_flagged():
    def correlated(z, u, context):
        rho = 0.3 + 0.05 * u.to(z.dtype)
        q = z[:, 0] ** 2 + z[:, 1] ** 2 - 2 * rho * z[:, 0] * z[:, 1]
        return -0.5 * q / (1 - rho ** 2)

    sv = sufficient_variability(correlated, points(10, n=2), 6, dtype=torch.float64)
    assert sv.cross_derivative_ratio > 0.1
    assert "not conditionally factorized" in sv.verdict


# -- fitted models and the callable protocol ----------------------------------------------
def test_ivae_prior_random_holds_identical_fails():
    n, U = 2, 8
    model = IVAE(obs_dim=4, latent_dim=n, num_domains=U, hidden_dim=16, num_layers=2)
    x, u = torch.randn(60, 4), torch.arange(60) % U
    z_hat = model.encode(x, u)
    # the initial prior is N(0, I) in every domain: no variability at all
    sv = sufficient_variability(model, z_hat)
    assert sv.num_domains == U and float(sv) == 0.0 and sv.rank_max == 0
    g = torch.Generator().manual_seed(0)
    model.prior_loc = PyroParam(torch.randn(U, n, generator=g))
    model.prior_scale = PyroParam(0.5 + torch.rand(U, n, generator=g),
                                  constraint=constraints.positive)
    model.eval()
    with torch.no_grad():  # callers in eval/no-grad mode still get derivatives
        sv = sufficient_variability(model, z_hat, U)
    assert float(sv) == 1.0
    first, second = log_density_derivatives(model, z_hat, 3)
    torch.testing.assert_close(second, (-1 / model.prior_scale[3] ** 2).expand(60, n)
                               .detach())
    model.prior_loc = PyroParam(torch.randn(1, n, generator=g).repeat(U, 1))
    model.prior_scale = PyroParam((0.5 + torch.rand(1, n, generator=g)).repeat(U, 1),
                                  constraint=constraints.positive)
    sv = sufficient_variability(model, z_hat, U)
    assert float(sv) == 0.0 and sv.rank_max == 0
    with pytest.raises(ValueError, match="exceeds the density's own num_domains=8"):
        sufficient_variability(model, z_hat, 9)


def test_callable_with_temporal_context():
    n, U, lag = 2, 7, 2
    g = torch.Generator().manual_seed(3)
    a = 2 * torch.rand(U, n, generator=g) - 1
    s = 0.5 + torch.rand(U, n, generator=g)

    def transition(z, u, context):
        mean = a[u] * context[:, -1]
        return torch.distributions.Normal(mean, s[u]).log_prob(z).sum(-1)

    seqs = torch.randn(5, 12, n, generator=g)
    pts, ctx = lagged_points(seqs, lag=lag)
    assert pts.shape == (5 * 10, n) and ctx.shape == (5 * 10, lag, n)
    torch.testing.assert_close(pts[0], seqs[0, 2])
    torch.testing.assert_close(ctx[0], seqs[0, :2])
    torch.testing.assert_close(ctx[11], seqs[1, 1:3])
    sv = sufficient_variability(transition, pts, U, context=ctx)
    assert float(sv) == 1.0
    # closed form of the first derivative, with the history
    first, _ = log_density_derivatives(transition, pts, 4, context=ctx)
    torch.testing.assert_close(first, -(pts - a[4] * ctx[:, -1]) / s[4] ** 2)
    with pytest.raises(ValueError, match="context must be None or"):
        sufficient_variability(transition, pts, U, context=ctx[:-1])
    with pytest.raises(ValueError, match="context must be None or"):
        sufficient_variability(transition, pts, U, context=ctx[..., :1])


# -- input validation ---------------------------------------------------------------------
def test_sufficient_variability_errors():
    process = sources(n=2, U=5)
    z = points(8, n=2)
    with pytest.raises(ValueError, match=r"z must have shape \(P, n\)"):
        sufficient_variability(process, z[:, 0], 5)
    with pytest.raises(ValueError, match="z contains 2 NaN"):
        sufficient_variability(process, torch.where(torch.arange(8)[:, None] == 0,
                                                    torch.nan, z), 5)
    with pytest.raises(ValueError, match="num_domains must be an int >= 2"):
        sufficient_variability(process, z, 1)
    assert sufficient_variability(process, z).num_domains == 5  # process.num_domains
    with pytest.raises(ValueError, match="num_domains is required"):
        sufficient_variability(lambda z, u, c: -(z ** 2).sum(1), z)
    with pytest.raises(ValueError, match=r"reference must be a domain index in \[0, "):
        sufficient_variability(process, z, 5, reference=5)
    with pytest.raises(TypeError, match="density must have a method conditional_log_prob"):
        sufficient_variability(object(), z, 5)
    with pytest.raises(ValueError, match=r"density returned shape \(40, 1\)"):
        sufficient_variability(lambda z, u, c: -z[:, :1] ** 2, z, 5)
    with pytest.raises(ValueError, match="NaN/inf log-densities"):
        sufficient_variability(lambda z, u, c: torch.log(z[:, 0]), z, 5)
    with pytest.raises(ValueError, match="do not depend differentiably on z"):
        sufficient_variability(lambda z, u, c: (-z ** 2).sum(1).detach(), z, 5)
    with pytest.raises(ValueError, match="rtol must be"):
        sufficient_variability(process, z, 5, rtol=2.0)
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        sufficient_variability(process, z, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        sufficient_variability(process, z, 5, chunk_size=0)
    with pytest.raises(ValueError, match="lag must be a positive int"):
        lagged_points(torch.zeros(2, 3, 2), lag=0)
    with pytest.raises(ValueError, match=r"z must have shape \(N, T, n\) with T > lag=3"):
        lagged_points(torch.zeros(2, 3, 2), lag=3)


# -- Jacobian structure -------------------------------------------------------------------
@pytest.fixture
def mixing():
    return LeakyReLUMLPMixing(3, 5, num_layers=3, seed=0)


def test_jacobian_inverse_up_to_scaled_permutation_is_perfect(mixing):
    perm, scales = torch.tensor([2, 0, 1]), torch.tensor([2.0, -0.5, 3.0])
    z = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    js = jacobian_structure(lambda x: mixing.inverse(x)[:, perm] * scales, mixing, z)
    assert float(js) == pytest.approx(1.0, abs=1e-6) and js.off_mass < 1e-6
    np.testing.assert_array_equal(js.permutation, np.argsort(perm.numpy()))
    np.testing.assert_allclose(js.matched_derivative, scales[js.permutation].numpy(),
                               rtol=1e-3)
    np.testing.assert_array_equal(js.signs, np.sign(scales[js.permutation].numpy()))
    assert js.jacobian.shape == (100, 3, 3) and js.mean_abs_jacobian.shape == (3, 3)
    assert js.off_mass_per_point.shape == (100,) and js.off_mass_per_dim.shape == (3,)


def test_jacobian_45_degree_rotation_has_half_off_mass():
    mixing = LeakyReLUMLPMixing(2, 2, num_layers=1, seed=0)
    c = math.cos(math.pi / 4)
    rotation = torch.tensor([[c, -c], [c, c]])
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    js = jacobian_structure(lambda x: mixing.inverse(x) @ rotation.T, mixing, z,
                            standardize=False)
    # every row of J = R is (+-1/sqrt 2, 1/sqrt 2): half of its squared mass is off
    assert js.off_mass == pytest.approx(0.5, abs=1e-5)
    assert float(js) == pytest.approx(0.5, abs=1e-5)
    np.testing.assert_allclose(js.mean_abs_jacobian, c, rtol=1e-4)


def test_jacobian_componentwise_nonlinear_encoder_is_perfect(mixing):
    z = torch.randn(80, 3, generator=torch.Generator().manual_seed(1))
    tanh = jacobian_structure(lambda x: torch.tanh(-2 * mixing.inverse(x)[:, [1, 2, 0]]),
                              mixing, z)
    assert float(tanh) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(tanh.sign_consistency, 1.0)
    np.testing.assert_array_equal(tanh.signs, -1.0)
    # non-monotone component-wise maps are allowed too (sign consistency tells them apart)
    square = jacobian_structure(lambda x: mixing.inverse(x) ** 2, mixing, z)
    assert float(square) == pytest.approx(1.0, abs=1e-6)
    assert np.all(square.sign_consistency < 0.8)


def test_jacobian_entangled_and_standardized():
    mixing = LeakyReLUMLPMixing(2, 2, num_layers=1, seed=0)
    shear = torch.tensor([[1.0, 0.5], [0.0, 1.0]])
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(2))

    def encoder(x):
        return mixing.inverse(x) @ shear.T

    js = jacobian_structure(encoder, mixing, z, standardize=False)
    # row 0 of J is (1, 0.5): off-mass 0.25 / 1.25; row 1 is exact
    assert js.off_mass == pytest.approx(0.5 * 0.2, abs=1e-4)
    np.testing.assert_allclose(js.off_mass_per_dim, [0.2, 0.0], atol=1e-4)  # per true latent
    # measuring z_1 in other units: unit-free with standardize=True only
    c = torch.tensor([1.0, 100.0])
    scaled = jacobian_structure(encoder, lambda z: mixing(z / c), z * c)
    base = jacobian_structure(encoder, mixing, z)
    assert float(scaled) == pytest.approx(float(base), abs=1e-4)
    assert jacobian_structure(encoder, lambda z: mixing(z / c), z * c,
                              standardize=False).off_mass < 1e-3


def test_jacobian_random_rotation_scores_low_and_extra_latents_ignored(mixing):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(4)))
    z = torch.randn(60, 3, generator=torch.Generator().manual_seed(5))
    rotated = jacobian_structure(lambda x: mixing.inverse(x) @ q.T, mixing, z,
                                 standardize=False)
    assert 0.2 < rotated.off_mass < 2 / 3

    def wider(x):
        z_hat = mixing.inverse(x)
        return torch.cat([z_hat[:, :1] + z_hat[:, 1:2], z_hat], 1)  # (P, 4)

    js = jacobian_structure(wider, mixing, z)
    assert js.jacobian.shape == (60, 4, 3) and js.share.shape == (4, 3)
    assert float(js) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(js.permutation, [1, 2, 3])


def test_jacobian_with_ivae_posterior():
    model = IVAE(obs_dim=5, latent_dim=3, num_domains=7, hidden_dim=16, num_layers=2)
    mixing = LeakyReLUMLPMixing(3, 5, num_layers=2, seed=1)
    z, u = torch.randn(40, 3), torch.arange(40) % 7
    js = jacobian_structure(lambda x, u: model.posterior(x, u)[0], mixing, z, u=u)
    assert 0.0 <= float(js) <= 1.0 and js.jacobian.shape == (40, 3, 3)
    assert sorted(js.permutation) == [0, 1, 2]


def test_jacobian_structure_errors(mixing):
    z = torch.randn(10, 3)
    with pytest.raises(TypeError, match="encoder returned a tuple"):
        jacobian_structure(lambda x: (mixing.inverse(x), None), mixing, z)
    with pytest.raises(ValueError, match="does not depend differentiably on x"):
        jacobian_structure(lambda x: mixing.inverse(x).detach(), mixing, z)
    with pytest.raises(ValueError, match="fewer than the 3 true ones"):
        jacobian_structure(lambda x: mixing.inverse(x)[:, :2], mixing, z)
    with pytest.raises(ValueError, match=r"z must have shape \(P, n\)"):
        jacobian_structure(mixing.inverse, mixing, z[None])
    with pytest.raises(ValueError, match=r"u must be None or \(P,\) = \(10,\) integers"):
        jacobian_structure(lambda x, u: mixing.inverse(x), mixing, z, u=torch.zeros(9).long())
    with pytest.raises(ValueError, match="mixing must map z"):
        jacobian_structure(mixing.inverse, lambda z: z[0], z)
    with pytest.raises(ValueError, match="zero at every point"):
        jacobian_structure(lambda x: 0 * x[:, :3], mixing, z)
    with pytest.raises(TypeError, match="encoder must be callable"):
        jacobian_structure(None, mixing, z)
