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


@pytest.mark.parametrize("kwargs,match", [
    (dict(obs_dim=2), "obs_dim"), (dict(sem="quadratic"), "sem"),
    (dict(interventions="hard"), "interventions"), (dict(noise="cauchy"), "noise"),
    (dict(graph=np.ones((3, 3)) - np.eye(3)), "cycle"), (dict(weight_range=(0, 1)), "weight"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        latent_dag(**{"num_latents": 3, **kwargs})
