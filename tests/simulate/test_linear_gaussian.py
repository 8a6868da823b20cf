import numpy as np
import pytest
import torch

from pyrocrl import simulate
from pyrocrl.simulate.linear_gaussian import MATRIX_NAMES


def test_shapes_dtypes_and_info():
    ds = simulate.linear_gaussian(state_dim=3, obs_dim=5, num_sequences=7, seq_len=11, seed=0)
    assert ds.x.shape == (7, 11, 5) and ds.z.shape == (7, 11, 3) and ds.u is None
    assert ds.x.dtype == ds.z.dtype == torch.float32
    assert ds.info["seed"] == 0
    shapes = {"transition_matrix": (3, 3), "transition_cov": (3, 3),
              "observation_matrix": (5, 3), "observation_cov": (5, 5), "initial_mean": (3,),
              "initial_cov": (3, 3)}
    for name in MATRIX_NAMES:
        assert ds.info[name].shape == shapes[name] and ds.info[name].dtype == np.float64
    for name in ("transition_cov", "observation_cov", "initial_cov"):
        assert np.linalg.eigvalsh(ds.info[name]).min() > 0
    assert ds.info["spectral_radius"] == pytest.approx(0.9)
    assert simulate.linear_gaussian(2, 2, 3, 4, seed=0, dtype=torch.float64).x.dtype \
        == torch.float64


def test_deterministic_given_seed_and_restores_the_global_rng():
    state = torch.get_rng_state()
    a = simulate.linear_gaussian(2, 3, num_sequences=4, seq_len=6, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = simulate.linear_gaussian(2, 3, num_sequences=4, seq_len=6, seed=3)
    c = simulate.linear_gaussian(2, 3, num_sequences=4, seq_len=6, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)
    for name in MATRIX_NAMES:
        np.testing.assert_array_equal(a.info[name], b.info[name])
    assert not torch.equal(a.x, c.x)
    assert not np.array_equal(a.info["transition_matrix"], c.info["transition_matrix"])


def test_overrides_are_used_and_leave_the_other_matrices_unchanged():
    default = simulate.linear_gaussian(2, 3, num_sequences=2, seq_len=3, seed=0)
    a = np.array([[0.5, 0.1], [0.0, -0.3]])
    ds = simulate.linear_gaussian(2, 3, num_sequences=2, seq_len=3, seed=0,
                                  transition_matrix=torch.tensor(a), initial_mean=[1.0, -1.0])
    np.testing.assert_array_equal(ds.info["transition_matrix"], a)
    np.testing.assert_array_equal(ds.info["initial_mean"], [1.0, -1.0])
    assert ds.info["spectral_radius"] == pytest.approx(0.5)
    for name in ("transition_cov", "observation_matrix", "observation_cov", "initial_cov"):
        np.testing.assert_array_equal(ds.info[name], default.info[name])


def test_samples_follow_the_generative_story():
    """Noise residuals have the stated covariances (Monte Carlo, 20000 sequences)."""
    a = np.array([[0.8, 0.2], [-0.1, 0.5]])
    c = np.array([[1.0, 0.0], [0.5, -1.0], [0.3, 0.2]])
    q = np.array([[0.3, 0.1], [0.1, 0.2]])
    r = np.diag([0.1, 0.2, 0.3])
    m0, p0 = np.array([1.0, -2.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    ds = simulate.linear_gaussian(2, 3, num_sequences=20000, seq_len=2, seed=1,
                                  dtype=torch.float64, transition_matrix=a, transition_cov=q,
                                  observation_matrix=c, observation_cov=r, initial_mean=m0,
                                  initial_cov=p0)
    z, x = ds.z.numpy(), ds.x.numpy()
    # standard errors of these moments are about 0.01 here; 0.04 is 4 of them
    np.testing.assert_allclose(z[:, 0].mean(0), m0, atol=0.04)
    np.testing.assert_allclose(np.cov(z[:, 0].T), p0, atol=0.04)
    np.testing.assert_allclose(np.cov((z[:, 1] - z[:, 0] @ a.T).T), q, atol=0.04)
    np.testing.assert_allclose(np.cov((x - z @ c.T).reshape(-1, 3).T), r, atol=0.04)


@pytest.mark.parametrize("kwargs, match", [
    (dict(transition_matrix=np.eye(3)), r"transition_matrix must have shape "
                                        r"\(state_dim, state_dim\) = \(2, 2\), got \(3, 3\)"),
    (dict(observation_matrix=np.ones((2, 3))), r"observation_matrix must have shape "
                                               r"\(obs_dim, state_dim\) = \(3, 2\)"),
    (dict(initial_mean=np.zeros((2, 1))), r"initial_mean must have shape \(state_dim,\)"),
    (dict(transition_cov=np.diag([1.0, -0.1])), "transition_cov must be positive definite"),
    (dict(observation_cov=np.zeros((3, 3))), "observation_cov must be positive definite"),
    (dict(initial_cov=np.array([[1.0, 0.5], [0.0, 1.0]])), "initial_cov must be symmetric"),
    (dict(transition_matrix=np.full((2, 2), np.nan)), "transition_matrix contains NaN"),
    (dict(seq_len=0), "seq_len must be an int >= 1"),
    (dict(num_sequences=2.5), "num_sequences must be an int"),
    (dict(spectral_radius=-1.0), "spectral_radius must be a positive number"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    args = dict(state_dim=2, obs_dim=3, num_sequences=2, seq_len=3, seed=0)
    with pytest.raises(ValueError, match=match):
        simulate.linear_gaussian(**{**args, **kwargs})


def test_unknown_matrix_name_is_a_type_error():
    with pytest.raises(TypeError, match="transition_matrx"):
        simulate.linear_gaussian(2, 3, 2, 3, seed=0, transition_matrx=np.eye(2))
