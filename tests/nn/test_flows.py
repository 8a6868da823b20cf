"""The invertible layers: inverses, log-determinants against autograd Jacobians, and the
exact leaky ReLU in the limit of no smoothing."""

import pytest
import torch
from torch.nn import functional as F

from pyrocrl.nn.flows import InvertibleLinear, SmoothLeakyReLU, leaky_relu_flow


def generative(layers):
    def g(z):
        for layer in layers:
            z = layer(z)
        return z
    return g


def autograd_log_det(g, z):
    """log |det dg/dz| per point, from the full Jacobian (an independent reference)."""
    jac = torch.stack([torch.autograd.functional.jacobian(g, point) for point in z])
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("smoothness", [1e-3, 0.05, 1.0])
def test_smooth_leaky_relu_inverts_and_its_log_det_is_the_derivative(smoothness):
    layer = SmoothLeakyReLU(4, negative_slope=0.2, smoothness=smoothness).double()
    h = 3 * torch.randn(60, 4, dtype=torch.float64)
    y = layer(h)
    torch.testing.assert_close(layer.inv(y), h, atol=1e-9, rtol=0)
    torch.testing.assert_close(layer.log_abs_det_jacobian(h, y).detach(),
                               autograd_log_det(layer, h), atol=1e-8, rtol=0)


def test_smooth_leaky_relu_tends_to_the_leaky_relu():
    h = torch.linspace(-5, 5, 1001, dtype=torch.float64)[:, None]
    for slope in (0.2, 0.5):
        layer = SmoothLeakyReLU(1, negative_slope=slope, smoothness=1e-6).double()
        torch.testing.assert_close(layer(h), F.leaky_relu(h, slope), atol=1e-5, rtol=0)
    # slope 1 is the identity whatever the smoothing
    torch.testing.assert_close(SmoothLeakyReLU(1, 1.0, 0.5).double()(h), h)


def test_invertible_linear_inverts_and_its_log_det_is_the_jacobians():
    torch.manual_seed(0)
    layer = InvertibleLinear(5).double()
    with torch.no_grad():
        layer.weight.mul_(torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0], dtype=torch.float64))
        layer.bias.normal_()
    z = torch.randn(50, 5, dtype=torch.float64)
    x = layer(z)
    torch.testing.assert_close(layer.inv(x), z)
    # y -> A y + c is the stored map: its inverse is the generative direction
    torch.testing.assert_close(x @ layer.weight.T + layer.bias, z)
    torch.testing.assert_close(layer.log_abs_det_jacobian(z, x).detach(),
                               autograd_log_det(layer, z))


def test_a_flow_s_log_det_is_the_sum_of_its_layers_and_matches_autograd():
    torch.manual_seed(1)
    layers = leaky_relu_flow(3, num_layers=3, smoothness=0.1).double()
    z = torch.randn(40, 3, dtype=torch.float64)
    g = generative(layers)
    total, h = 0.0, z
    for layer in layers:
        y = layer(h)
        total = total + layer.log_abs_det_jacobian(h, y)
        h = y
    torch.testing.assert_close(total.detach(), autograd_log_det(g, z), atol=1e-8, rtol=0)
    assert len(layers) == 5  # 3 affine layers, 2 activations


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="negative_slope"):
        SmoothLeakyReLU(2, negative_slope=0.0)
    with pytest.raises(ValueError, match="smoothness"):
        SmoothLeakyReLU(2, smoothness=0.0)
    with pytest.raises(ValueError, match="num_layers"):
        leaky_relu_flow(2, num_layers=0)


def test_copies_are_independent_networks_side_by_side():
    torch.manual_seed(3)
    population = leaky_relu_flow(4, num_layers=3, smoothness=0.05, copies=3).double()
    with torch.no_grad():
        for p in population.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(3, 20, 4, dtype=torch.float64)
    x = generative(population)(z)
    assert x.shape == (3, 20, 4)
    h, log_det = z, torch.zeros(3, 20, dtype=torch.float64)
    for layer in population:
        y = layer(h)
        log_det = log_det + layer.log_abs_det_jacobian(h, y)
        h = y
    for k in range(3):
        single = leaky_relu_flow(4, num_layers=3, smoothness=0.05).double()
        with torch.no_grad():
            for mine, theirs in zip(single.parameters(), population.parameters()):
                mine.copy_(theirs[k])
        torch.testing.assert_close(x[k], generative(single)(z[k]))
        # each copy's log-det is its own network's (autograd reference), shape (K, N)
        torch.testing.assert_close(log_det[k].detach(),
                                   autograd_log_det(generative(single), z[k]))
    # an input without the copies dimension is shared by all copies
    x_shared = generative(population)(z[0])
    torch.testing.assert_close(x_shared[2], generative(population)(z[0].expand(3, 20, 4))[2])
    with pytest.raises(ValueError, match="copies"):
        leaky_relu_flow(4, copies=0)
