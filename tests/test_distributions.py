import numpy as np
import pyro
import pytest
import torch

from pyrocrl.distributions import LinearSEM


def reference_gaussian(weights, bias, scale):
    """z = W^T z + b + s*eps  =>  z = (I - W^T)^{-1} (b + s*eps): mean and covariance by
    direct algebra in NumPy (float64), independent of LinearSEM's code path."""
    w, b, s = (np.asarray(t, dtype=np.float64) for t in (weights, bias, scale))
    a = np.linalg.inv(np.eye(len(b)) - w.T)
    return a @ b, a @ np.diag(s**2) @ a.T


def test_log_prob_equals_the_implied_multivariate_normal_even_for_cyclic_weights():
    torch.manual_seed(0)
    w = 0.4 * torch.randn(4, 4, dtype=torch.float64)  # dense: cyclic
    b, s = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5
    mean, cov = reference_gaussian(w, b, s)
    mvn = torch.distributions.MultivariateNormal(torch.tensor(mean), torch.tensor(cov))
    z = torch.randn(7, 4, dtype=torch.float64)
    np.testing.assert_allclose(LinearSEM(w, b, s).log_prob(z), mvn.log_prob(z), atol=1e-10)
    np.testing.assert_allclose(LinearSEM(w, b, s).covariance_matrix, cov, atol=1e-12)


def test_dag_density_is_the_product_of_the_mechanisms():
    # chain 0 -> 1 with weight 2: log p = log N(z0; b0, s0) + log N(z1; 2 z0 + b1, s1)
    w = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    b, s = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.5])
    z = torch.tensor([[1.0, 0.3]])
    normal = torch.distributions.Normal
    expected = normal(0.5, 1.0).log_prob(torch.tensor(1.0)) + normal(
        2 * 1.0 - 1.0, 0.5).log_prob(torch.tensor(0.3))
    assert torch.allclose(LinearSEM(w, b, s).log_prob(z), expected.reshape(1))


def test_samples_have_the_stated_moments_and_batch_shapes():
    torch.manual_seed(1)
    w = torch.tensor([[0.0, 1.5, 0.0], [0.0, 0.0, -0.8], [0.0, 0.0, 0.0]])
    b, s = torch.tensor([1.0, 0.0, -1.0]), torch.tensor([1.0, 0.5, 0.7])
    d = LinearSEM(w, b, s)
    z = d.sample((100_000,))
    mean, cov = reference_gaussian(w, b, s)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(torch.cov(z.T), cov, atol=0.06)
    batched = LinearSEM(w.expand(5, 3, 3), b, s)
    assert batched.batch_shape == (5,) and batched.event_shape == (3,)
    assert batched.sample((2,)).shape == (2, 5, 3)
    assert batched.expand((4, 5)).log_prob(torch.zeros(4, 5, 3)).shape == (4, 5)


def test_usable_as_a_pyro_sample_site():
    def model():
        with pyro.plate("data", 6):
            return pyro.sample("z", LinearSEM(torch.zeros(2, 2), torch.zeros(2), torch.ones(2)))

    trace = pyro.poutine.trace(model).get_trace()
    assert trace.nodes["z"]["value"].shape == (6, 2)
    assert trace.log_prob_sum().isfinite()


def test_bad_weights_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        LinearSEM(torch.zeros(2, 3), torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="n=2"):
        LinearSEM(torch.zeros(2, 2), torch.zeros(3), torch.ones(3))


def test_linear_sem_takes_a_precomputed_log_determinant():
    """One determinant per environment, gathered per point, gives the same density (and
    gradient) as one determinant per point."""
    g = torch.Generator().manual_seed(0)
    env_w = 0.3 * torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    env_w.requires_grad_(True)
    u = torch.tensor([0, 2, 1, 1, 0])
    z = torch.randn(5, 4, generator=g, dtype=torch.float64)
    b, s = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    per_env = torch.linalg.slogdet(torch.eye(4, dtype=torch.float64) - env_w).logabsdet
    fast = LinearSEM(env_w[u], b, s, log_abs_det=per_env[u])
    slow = LinearSEM(env_w[u], b, s)
    torch.testing.assert_close(fast.log_prob(z), slow.log_prob(z))
    grad_fast, = torch.autograd.grad(fast.log_prob(z).sum(), env_w)
    grad_slow, = torch.autograd.grad(slow.log_prob(z).sum(), env_w)
    torch.testing.assert_close(grad_fast, grad_slow)
    torch.testing.assert_close(fast.expand((2, 5)).log_prob(z), slow.log_prob(z).expand(2, 5))
