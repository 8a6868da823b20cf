import networkx as nx
import numpy as np
import pytest
import torch

from pyrocrl.distributions import LinearSEM
from pyrocrl.simulate.latent_dag import latent_dag


def test_shapes_environments_and_determinism():
    ds = latent_dag(4, samples_per_env=300, obs_dim=8, seed=0)
    assert ds.x.shape == (1500, 8) and ds.z.shape == (1500, 4)
    assert ds.info["targets"].tolist() == [-1, 0, 1, 2, 3] and ds.info["num_envs"] == 5
    assert torch.equal(ds.u.unique(), torch.arange(5))
    assert nx.is_directed_acyclic_graph(nx.DiGraph(ds.graph != 0))
    assert torch.equal(ds.x, latent_dag(4, samples_per_env=300, obs_dim=8, seed=0).x)
    assert np.allclose(ds.x.std(0).numpy(), 1.0, atol=1e-4)  # standardized features


def test_observational_environment_follows_the_linear_sem():
    ds = latent_dag(4, graph="chain", samples_per_env=50_000, seed=1)
    process = ds.info["process"]
    sem = LinearSEM(torch.as_tensor(ds.graph, dtype=torch.float32), torch.zeros(4),
                    process.scale)
    z0 = ds.z[ds.u == 0]
    np.testing.assert_allclose(torch.cov(z0.T), sem.covariance_matrix, rtol=0.05, atol=0.03)


def test_perfect_intervention_cuts_the_parents_and_moves_the_target():
    ds = latent_dag(3, graph="chain", samples_per_env=20_000, seed=2, weight_range=(1.0, 1.5))
    process = ds.info["process"]
    # environment 2 intervenes on latent 1, whose parent in the chain is latent 0
    z_obs, z_int = ds.z[ds.u == 0], ds.z[ds.u == 2]
    assert abs(np.corrcoef(z_obs[:, 0], z_obs[:, 1])[0, 1]) > 0.5
    assert abs(np.corrcoef(z_int[:, 0], z_int[:, 1])[0, 1]) < 0.03
    assert abs(z_int[:, 1].mean() - process.target_loc[1]) < 0.05
    assert abs(z_int[:, 1].std() - process.target_scale[1]) < 0.05
    # its child still listens to it
    assert abs(np.corrcoef(z_int[:, 1], z_int[:, 2])[0, 1]) > 0.5


def test_soft_intervention_weakens_but_keeps_the_parents():
    ds = latent_dag(2, graph="chain", samples_per_env=20_000, seed=3, interventions="soft",
                    weight_range=(1.5, 1.5))
    z_obs, z_int = ds.z[ds.u == 0], ds.z[ds.u == 2]
    slope = lambda z: np.polyfit(z[:, 0], z[:, 1], 1)[0]  # noqa: E731
    factor = float(ds.info["process"].soft_factor[1])
    assert abs(slope(z_int) / slope(z_obs) - factor) < 0.05


def test_observational_only_and_nonlinear_laplace():
    ds = latent_dag(3, samples_per_env=200, seed=0, interventions=None, sem="nonlinear",
                    noise="laplace")
    assert ds.info["targets"].tolist() == [-1] and ds.x.shape[0] == 200


@pytest.mark.parametrize("interventions,noise", [("perfect", "gaussian"), ("soft", "laplace")])
def test_exact_linear_moments_match_the_samples(interventions, noise):
    n, per_env = 4, 50_000
    ds = latent_dag(n, samples_per_env=per_env, obs_dim=6, mixing="linear", seed=3,
                    interventions=interventions, noise=noise, weight_range=(0.5, 2.0))
    info, process = ds.info, ds.info["process"]
    assert ds.u.tolist() == np.repeat(np.arange(n + 1), per_env).tolist()  # sorted by env
    env_weights, scales, means = info["env_weights"], info["noise_scales"], info["env_means"]
    assert env_weights.shape == (n + 1, n, n) and scales.shape == means.shape == (n + 1, n)
    assert all(v.dtype == np.float64 for v in (env_weights, scales, means,
                                               info["latent_covariances"]))
    assert np.array_equal(env_weights[0], ds.graph) and np.all(means[0] == 0)
    weights = np.abs(ds.graph[ds.graph != 0])
    assert weights.min() >= 0.5 and weights.max() <= 2.0
    assert np.all((scales[0] >= 0.5) & (scales[0] <= 1.0))
    np.testing.assert_allclose(scales[0], process.scale, rtol=1e-7)  # what model() samples
    for k in range(1, n + 1):  # only the target's column, scale and mean change
        t, others = k - 1, np.arange(n) != k - 1
        assert np.array_equal(env_weights[k][:, others], ds.graph[:, others])
        if interventions == "perfect":
            assert np.all(env_weights[k][:, t] == 0)
        else:  # soft: incoming weights shrunk by the target's factor, in (0.1, 0.4)
            factor = float(process.soft_factor[t])
            assert 0.1 <= factor <= 0.4
            np.testing.assert_allclose(env_weights[k][:, t], factor * ds.graph[:, t], rtol=1e-6)
        assert 1.2 <= scales[k, t] <= 2.0 and np.all(scales[k, others] == scales[0, others])
        # the mean of z_t is target_loc (for soft: plus the shrunk parents' means, all 0 here
        # as the target's ancestors are not intervened on), its descendants' means follow
        assert means[k, t] == pytest.approx(float(process.target_loc[t]), rel=1e-6)
        assert 1.0 <= abs(means[k, t]) <= 2.0
    z, u = ds.z.double().numpy(), ds.u.numpy()
    for k in range(n + 1):
        cov = info["latent_covariances"][k]
        np.testing.assert_allclose(np.cov(z[u == k].T), cov, atol=0.05 * np.abs(cov).max())
        np.testing.assert_allclose(z[u == k].mean(0), means[k],
                                   atol=5 * np.sqrt(np.diag(cov).max() / per_env))
    g = info["mixing_matrix"]
    assert g.shape == (6, n) and g.dtype == np.float64 and np.linalg.matrix_rank(g) == n
    np.testing.assert_allclose(ds.x.double().numpy(), z @ g.T, rtol=1e-5, atol=1e-5)


def test_mixing_matrix_only_for_linear_mixings_and_moments_only_for_linear_sems():
    for kwargs in (dict(mixing="linear"), dict(mixing="leaky_mlp", mixing_layers=1)):
        ds = latent_dag(3, samples_per_env=500, obs_dim=5, seed=4, **kwargs)  # standardized
        x = ds.z.double().numpy() @ ds.info["mixing_matrix"].T
        np.testing.assert_allclose(ds.x.double().numpy(), x, rtol=1e-5, atol=1e-5)
        assert np.allclose(x.std(0, ddof=1), 1.0, atol=1e-4)
    nonlinear_mixing = latent_dag(3, samples_per_env=50, obs_dim=5, seed=4)
    assert nonlinear_mixing.info["mixing_matrix"] is None
    assert nonlinear_mixing.info["latent_covariances"] is not None
    nonlinear_sem = latent_dag(3, samples_per_env=50, obs_dim=5, seed=4, sem="nonlinear",
                               mixing="linear")
    assert nonlinear_sem.info["mixing_matrix"] is not None  # a property of the mixing alone
    for key in ("env_weights", "noise_scales", "env_means", "latent_covariances"):
        assert nonlinear_sem.info[key] is None
    observational = latent_dag(3, samples_per_env=50, seed=4, interventions=None)
    assert observational.info["latent_covariances"].shape == (1, 3, 3)


def test_intervention_ranges():
    ds = latent_dag(3, samples_per_env=20, seed=5, intervention_scale_range=(0.2, 0.4),
                    intervention_loc_range=(0.0, 0.0))
    scales = ds.info["noise_scales"][np.arange(1, 4), np.arange(3)]
    assert np.all((scales >= 0.2) & (scales <= 0.4))
    assert np.all(ds.info["env_means"] == 0)
    # the defaults are the documented ones: same draws as passing them explicitly
    default = latent_dag(3, samples_per_env=20, seed=5)
    explicit = latent_dag(3, samples_per_env=20, seed=5, intervention_scale_range=(1.2, 2.0),
                          intervention_loc_range=(1.0, 2.0))
    assert torch.equal(default.x, explicit.x)
    assert not torch.equal(default.x, latent_dag(3, samples_per_env=20, seed=6).x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(obs_dim=2), "obs_dim"), (dict(sem="quadratic"), "sem"),
    (dict(interventions="hard"), "interventions"), (dict(noise="cauchy"), "noise"),
    (dict(graph=np.ones((3, 3)) - np.eye(3)), "cycle"), (dict(weight_range=(0, 1)), "weight"),
    (dict(intervention_scale_range=(0.5, 0.1)), "intervention_scale_range"),
    (dict(intervention_scale_range=(0.0, 1.0)), "intervention_scale_range"),
    (dict(intervention_loc_range=(-1.0, 1.0)), "intervention_loc_range"),
    (dict(samples_per_env=0), "samples_per_env must be a positive int"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        latent_dag(**{"num_latents": 3, **kwargs})
