import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from pyrocrl import simulate
from pyrocrl.simulate.temporal import NOISE_FLOOR

SETTINGS = ["fixed", "change", "modular", "noise_regimes"]


def small(setting="change", **kw):
    args = dict(num_latents=3, lag=2, num_domains=1 if setting == "fixed" else 4,
                num_sequences=200, seq_len=8, setting=setting, seed=0)
    args.update(kw)
    return simulate.nonstationary_temporal(**args)


def windows(ds):
    """(current (P, n), u (P,), context (P, L, n)) for every step with a full history."""
    process = ds.info["process"]
    n, L = process.num_latents, process.lag
    z = ds.z[..., :n]
    N, T = z.shape[:2]
    current = z[:, L:].reshape(-1, n)
    context = torch.stack([z[:, t - L:t] for t in range(L, T)], dim=1).reshape(-1, L, n)
    return current, ds.u.repeat_interleave(T - L), context


def independent_loc_scale(process, u, context):
    """The transition's mean and scale recomputed from the raw parameters with an explicit
    loop over lags (z_{t-l} = context[:, L - l])."""
    L = process.lag
    pre = sum(torch.einsum("pij,pj->pi", process.weights[u, l - 1], context[:, L - l])
              for l in range(1, L + 1))
    loc = F.leaky_relu(pre, 0.2)
    if process.noise_loc is not None:
        loc = loc + process.noise_loc[u]
    scale = process.scale[u]
    if process.noise_weights is not None:
        mod = sum(torch.einsum("pij,pj->pi", process.noise_weights[u, l - 1], context[:, L - l])
                  for l in range(1, L + 1))
        scale = scale * (NOISE_FLOOR + 2 * (1 - NOISE_FLOOR) * torch.sigmoid(mod))
    return loc, scale


@pytest.mark.parametrize("setting", SETTINGS)
def test_shapes_domains_and_info(setting):
    ds = small(setting, obs_dim=7)
    m = 2 if setting == "modular" else 0
    K = 1 if setting == "fixed" else 4
    assert ds.x.shape == (200, 8, 7) and ds.z.shape == (200, 8, 3 + m)
    assert ds.x.dtype == torch.float32 and ds.z.dtype == torch.float32
    assert ds.u.shape == (200,) and ds.u.dtype == torch.long
    assert torch.equal(torch.bincount(ds.u), torch.full((K,), 200 // K))
    assert (ds.u[1:] >= ds.u[:-1]).all(), "sequences are sorted by domain"
    info = ds.info
    assert info["seed"] == 0 and info["setting"] == setting
    assert info["dynamic_dims"] == [0, 1, 2] and info["observation_dims"] == list(range(3, 3 + m))
    process = info["process"]
    assert isinstance(process, simulate.TemporalProcess)
    assert (process.num_domains, process.lag, process.num_latents) == (K, 2, 3)
    assert process.num_observation_latents == m
    assert torch.isfinite(ds.x).all() and torch.isfinite(ds.z).all()


def test_unbalanced_counts_differ_by_at_most_one():
    ds = small(num_sequences=203, num_domains=5)
    counts = torch.bincount(ds.u)
    assert counts.sum() == 203 and counts.max() - counts.min() <= 1 and len(counts) == 5


@pytest.mark.parametrize("setting", SETTINGS)
def test_deterministic_given_seed_and_leaves_global_rng_alone(setting):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = small(setting, seed=4)
    assert torch.equal(torch.rand(3), expected), "the simulator consumed the caller's RNG"
    b = small(setting, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z) and torch.equal(a.u, b.u)
    c = small(setting, seed=5)
    assert not torch.equal(a.x, c.x) and not torch.equal(a.z, c.z)


@pytest.mark.parametrize("setting", SETTINGS)
def test_x_is_the_mixing_of_z_frame_by_frame(setting):
    ds = small(setting, obs_dim=6)
    g = ds.info["mixing"]
    torch.testing.assert_close(g(ds.z), ds.x)
    np.testing.assert_allclose(ds.x.reshape(-1, 6).std(0).numpy(), 1.0, atol=1e-4)
    noisy = small(setting, obs_dim=6, observation_noise=0.1, num_sequences=400)
    residual = noisy.x - noisy.info["mixing"](noisy.z)
    assert residual.std().item() == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize("setting, noise_mean_range", [(s, None) for s in SETTINGS]
                         + [("noise_regimes", (-1.0, 1.0)), ("change", (0.0, 0.5))])
def test_standardized_residuals_are_standard_normal(setting, noise_mean_range):
    ds = small(setting, num_latents=4, num_sequences=2000, seq_len=12,
               noise_mean_range=noise_mean_range)
    assert (ds.info["process"].noise_loc is None) == (noise_mean_range is None)
    process = ds.info["process"]
    current, u, context = windows(ds)
    loc, scale = independent_loc_scale(process, u, context)
    residual = (current - loc) / scale
    for d in range(process.num_domains):
        r = residual[u == d]
        assert r.mean(0).abs().max() < 0.075, r.mean(0)  # ~5 standard errors
        assert ((r.std(0) - 1).abs() < 0.06).all(), r.std(0)
    # and the true density is exactly the Gaussian with this mean and scale
    expected = stats.norm.logpdf(current.numpy(), loc.numpy(), scale.numpy()).sum(-1)
    got = process.conditional_log_prob(current, u, context)
    assert got.shape == (len(current),)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("setting", ["change", "noise_regimes"])
def test_density_differs_across_domains(setting):
    ds = small(setting)
    process = ds.info["process"]
    current, u, context = windows(ds)
    lp = [process.conditional_log_prob(current, torch.full_like(u, d), context)
          for d in range(process.num_domains)]
    for d in range(1, process.num_domains):
        assert (lp[d] - lp[0]).abs().mean() > 0.1
    if setting == "noise_regimes":
        # one transition shared by all regimes; only the noise scales change
        assert torch.equal(process.weights, process.weights[:1].expand_as(process.weights))
        assert process.noise_weights is None
        spread = process.scale.log().std(0)
        assert (spread > 0.2).all(), "regimes should have diverse noise scales"
        low, high = ds.info["noise_range"]
        assert (process.scale >= low).all() and (process.scale <= high).all()
    else:
        assert not torch.allclose(process.weights[0], process.weights[1])
        assert not torch.allclose(process.scale[0], process.scale[1])


def test_fixed_noise_is_history_modulated():
    ds = small("fixed", num_sequences=500)
    process = ds.info["process"]
    assert process.noise_weights is not None
    current, u, context = windows(ds)
    _, scale = independent_loc_scale(process, u, context)
    ratio = scale / process.scale[u]
    assert ratio.min() >= NOISE_FLOOR and ratio.max() <= 2 - NOISE_FLOOR
    assert ratio.std() > 0.2, "the noise scale should vary with the history"


def test_noise_regimes_with_one_regime_is_stationary():
    ds = small("noise_regimes", num_domains=1, num_sequences=300)
    process = ds.info["process"]
    current, u, context = windows(ds)
    _, scale = independent_loc_scale(process, u, context)
    assert (ds.u == 0).all()
    assert torch.equal(scale, scale[:1].expand_as(scale)), "same noise scale everywhere"


@pytest.mark.parametrize("setting, K", [("fixed", 1), ("change", 4), ("noise_regimes", 4)])
def test_long_trajectories_stay_bounded_and_alive(setting, K):
    ds = simulate.nonstationary_temporal(num_latents=8, lag=2, num_domains=K,
                                         num_sequences=100, seq_len=200, setting=setting,
                                         seed=1, burn_in=0)
    z = ds.z
    assert torch.isfinite(z).all() and z.abs().max() < 20
    per_dim = z[:, 50:].std((0, 1))
    assert (per_dim > 0.1).all() and (per_dim < 5).all(), per_dim
    # stationary: the spread in the middle and at the end agree
    middle, end = z[:, 50:100].std(), z[:, 150:].std()
    assert abs(middle / end - 1) < 0.15
    norms = torch.linalg.matrix_norm(ds.info["process"].weights, ord=2).sum(1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.9))


@pytest.mark.parametrize("setting", SETTINGS)
def test_conditional_log_prob_is_twice_differentiable(setting):
    ds = small(setting, num_sequences=40)
    process = ds.info["process"]
    current, u, context = windows(ds)
    z = current.clone().requires_grad_(True)
    ctx = context.clone().requires_grad_(True)
    lp = process.conditional_log_prob(z, u, ctx)
    assert torch.isfinite(lp).all()
    (dz,) = torch.autograd.grad(lp.sum(), z, create_graph=True)
    # Gaussian in z_t: the Hessian's diagonal is -1 / sigma^2
    (d2z,) = torch.autograd.grad(dz.sum(), z, create_graph=True)
    _, scale = independent_loc_scale(process, u, context)
    torch.testing.assert_close(d2z, -1 / scale**2)
    # the mixed derivative d^2 log p / dz_t dz_{t-1}, what TDRL's conditions are about
    (dzc,) = torch.autograd.grad(dz[:, 0].sum(), ctx)
    assert torch.isfinite(dzc).all() and dzc.abs().sum() > 0


def test_log_prob_sums_transitions():
    ds = small("change", seq_len=6)
    process = ds.info["process"]
    z, L = ds.z, process.lag
    expected = sum(process.conditional_log_prob(z[:, t], ds.u, z[:, t - L:t])
                   for t in range(L, z.shape[1]))
    torch.testing.assert_close(process.log_prob(z, ds.u), expected)


def test_modular_observation_latents():
    ds = small("modular", num_sequences=4000, seq_len=5, num_observation_latents=2)
    process = ds.info["process"]
    s = ds.z[..., ds.info["observation_dims"]]
    for d in range(4):
        block = s[ds.u == d].reshape(-1, 2)
        torch.testing.assert_close(block.mean(0), process.observation_loc[d], atol=0.05, rtol=0)
        torch.testing.assert_close(block.std(0), process.observation_scale[d], atol=0, rtol=0.05)
    assert not torch.allclose(process.observation_loc[0], process.observation_loc[1])
    # i.i.d. over time: no lag-1 correlation
    lag1 = np.corrcoef(s[:, 1:, 0].reshape(-1), s[:, :-1, 0].reshape(-1))[0, 1]
    corr_in_domain = [np.corrcoef((s[ds.u == d][:, 1:, 0]).reshape(-1),
                                  (s[ds.u == d][:, :-1, 0]).reshape(-1))[0, 1] for d in range(4)]
    assert max(abs(c) for c in corr_in_domain) < 0.05 and np.isfinite(lag1)
    # the full-width log_prob adds the observation-level density
    dynamic_only = process.log_prob(ds.z[..., :3], ds.u)
    obs = stats.norm.logpdf(s.numpy(), process.observation_loc[ds.u][:, None].numpy(),
                            process.observation_scale[ds.u][:, None].numpy()).sum((1, 2))
    np.testing.assert_allclose(process.log_prob(ds.z, ds.u).numpy(),
                               dynamic_only.numpy() + obs, rtol=1e-4)


def test_sample_method_matches_shapes():
    process = small("change").info["process"]
    torch.manual_seed(0)
    z = process.sample(torch.tensor([0, 1, 3]), seq_len=7, burn_in=3)
    assert z.shape == (3, 7, 3) and torch.isfinite(z).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"setting": "chaos"}, "setting"),
    ({"lag": 0}, "lag"),
    ({"seq_len": 2}, "seq_len"),
    ({"num_domains": 0}, "num_domains"),
    ({"setting": "fixed", "num_domains": 3}, "num_domains"),
    ({"obs_dim": 2}, "obs_dim"),
    ({"setting": "modular", "obs_dim": 4}, "obs_dim"),
    ({"num_latents": 0}, "num_latents"),
    ({"num_sequences": 3}, "num_sequences"),
    ({"transition_gain": 1.2}, "transition_gain"),
    ({"noise_range": (0.0, 1.0)}, "noise_range"),
    ({"num_observation_latents": 2}, "num_observation_latents"),
    ({"observation_noise": -0.1}, "observation_noise"),
    ({"burn_in": -1}, "burn_in"),
    ({"noise_mean_range": (1.0, -1.0)}, "noise_mean_range"),
    ({"mixing": "spline"}, "mixing"),
    ({"mixing_layers": 0}, "mixing_layers"),
    ({"mixing_weights": "haar"}, "mixing_weights"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_bad_density_arguments():
    process = small("change").info["process"]
    with pytest.raises(ValueError, match="context"):
        process.conditional_log_prob(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long),
                                     torch.zeros(5, 1, 3))
    with pytest.raises(ValueError, match="u"):
        process.conditional_log_prob(torch.zeros(5, 3), torch.full((5,), 9),
                                     torch.zeros(5, 2, 3))
    with pytest.raises(ValueError, match="z"):
        process.log_prob(torch.zeros(5, 2, 3), torch.zeros(5, dtype=torch.long))


def test_seed_must_be_int():
    with pytest.raises(TypeError, match="seed"):
        small(seed=1.5)


def test_noise_means_shift_by_regime():
    ds = small("noise_regimes", num_domains=5, noise_mean_range=(-1.0, 1.0))
    process = ds.info["process"]
    loc = process.noise_loc
    assert loc.shape == (5, 3) and (loc.abs() <= 1).all()
    assert loc.std(0).min() > 0.1
    # the shared transition is unchanged: only the noise differs between regimes
    assert torch.equal(process.weights, process.weights[:1].expand_as(process.weights))
