import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrocrl.nn import mlp
from pyrocrl.nn.side_by_side import SideBySide


def _nets(k, seed=0):
    nets = []
    for i in range(k):
        torch.manual_seed(seed + i)
        nets.append(mlp(4, 2, hidden_dim=8, num_layers=3))
    return nets


def test_forward_stacks_each_copys_output():
    nets = _nets(3)
    x = torch.randn(10, 4)
    out = SideBySide(nets)(x)
    assert out.shape == (3, 10, 2)
    for k, net in enumerate(nets):
        torch.testing.assert_close(out[k], net(x), rtol=0, atol=1e-6)


def test_each_gives_every_copy_its_own_arguments():
    nets = _nets(3)
    x = torch.randn(3, 6, 4)
    out = SideBySide(nets).each(x)
    assert out.shape == (3, 6, 2)
    for k, net in enumerate(nets):
        torch.testing.assert_close(out[k], net(x[k]), rtol=0, atol=1e-6)
    (one,) = _nets(1)
    torch.testing.assert_close(SideBySide([one]).each(x[:1])[0], one(x[0]))
    with pytest.raises(ValueError, match=r"argument 0 must have a leading dimension of "
                                         r"num_copies=3, got shape \(2, 6, 4\)"):
        SideBySide(nets).each(x[:2])


def test_summed_loss_trains_each_copy_as_if_alone():
    """Adam on the sum of K losses = K separate Adam runs on the same minibatches."""
    nets = _nets(3)
    population = SideBySide(nets)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g))
               for _ in range(25)]
    opt = torch.optim.Adam(population.parameters(), lr=1e-2)
    for x, y in batches:
        loss = (population(x) - y).pow(2).mean((-1, -2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, net in enumerate(nets):  # the originals were copied, not moved: train them alone
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for x, y in batches:
            loss = (net(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        state = population.copy_state(k)
        for name, value in net.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=1e-5)


class _Density(nn.Module):
    """A module whose forward builds a Pyro distribution (validated arguments outside)."""

    def __init__(self, loc):
        super().__init__()
        self.loc = nn.Parameter(torch.tensor(loc))
        self.register_buffer("log_scale", torch.tensor(0.5))

    def forward(self, x):
        return dist.Normal(self.loc, self.log_scale.exp()).log_prob(x)


def test_pyro_distributions_and_buffers_inside_the_copies():
    mods = [_Density(0.0), _Density(2.0)]
    x = torch.linspace(-1, 1, 5)
    out = SideBySide(mods)(x)
    assert out.shape == (2, 5)
    for k, mod in enumerate(mods):
        torch.testing.assert_close(out[k], mod(x))
    assert SideBySide(mods).copy_state(1)["log_scale"].item() == pytest.approx(0.5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least one module"):
        SideBySide([])
    with pytest.raises(ValueError, match="same parameter and buffer names and shapes"):
        SideBySide([mlp(4, 2, 8, 2), mlp(4, 2, 8, 3)])
    with pytest.raises(ValueError, match="same parameter and buffer names and shapes"):
        SideBySide([mlp(4, 2, 8, 2), mlp(4, 2, 16, 2)])
    with pytest.raises(IndexError, match=r"index must lie in \[0, 2\), got 2"):
        SideBySide(_nets(2)).copy_state(2)


def test_one_copy_is_the_module_itself_with_a_leading_dimension():
    (net,) = _nets(1)
    population = SideBySide([net])
    x = torch.randn(7, 4)
    out = population(x)
    assert out.shape == (1, 7, 2)
    torch.testing.assert_close(out[0], net(x))
    with torch.no_grad():  # a copy: changing the original does not reach it
        next(net.parameters()).add_(1.0)
    state = population.copy_state(0)
    assert set(state) == set(net.state_dict())
    assert not torch.equal(state["0.weight"], net.state_dict()["0.weight"])


def test_named_copy_parameters_use_the_original_names():
    nets = _nets(3)
    names = [name for name, _ in nets[0].named_parameters()]
    stacked = SideBySide(nets).named_copy_parameters()
    assert [name for name, _ in stacked] == names
    for (name, p), original in zip(stacked, nets[0].parameters()):
        assert p.shape == (3, *original.shape)
        torch.testing.assert_close(p[1], dict(nets[1].named_parameters())[name])
    population = SideBySide(nets[:1])
    single = population.named_copy_parameters()
    assert [name for name, _ in single] == names
    assert all(p is q for (_, p), q in zip(single, population.parameters()))
