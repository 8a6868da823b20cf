import pytest
import torch
from scipy import stats

from pyrocrl.simulate.dataset import Dataset
from pyrocrl.simulate.dictionary import sparse_dictionary


def small(**kw):
    args = dict(d_in=16, num_atoms=24, k=3, num_samples=2000, seed=0)
    args.update(kw)
    return sparse_dictionary(**args)


def test_shapes_atoms_and_exactly_k_positive_codes():
    ds = small(min_coefficient=0.5)
    assert isinstance(ds, Dataset)
    assert ds.x.shape == (2000, 16) and ds.z.shape == (2000, 24) and ds.u is None
    atoms = ds.info["atoms"]
    assert atoms.shape == (24, 16)
    torch.testing.assert_close(atoms.norm(dim=1), torch.ones(24))
    assert torch.equal((ds.z > 0).sum(1), torch.full((2000,), 3))
    assert (ds.z >= 0).all() and ds.z[ds.z > 0].min() >= 0.5
    # noise-free and offset-free by default: x is exactly the sparse combination
    torch.testing.assert_close(ds.x, ds.z @ atoms)
    off_diagonal = (atoms @ atoms.t()).abs().fill_diagonal_(0)
    assert ds.info["coherence"] == pytest.approx(off_diagonal.max().item())


def test_support_is_uniform_over_atoms_and_magnitudes_are_shifted_half_normal():
    ds = small(num_samples=20000, min_coefficient=0.25)
    # every atom is active with probability k / m: a chi-square test of the usage counts
    counts = (ds.z > 0).sum(0).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    # the active coefficients minus c_min are |N(0, 1)|
    magnitudes = ds.z[ds.z > 0].numpy() - 0.25
    assert stats.kstest(magnitudes, stats.halfnorm.cdf).pvalue > 1e-3


def test_noise_and_offset():
    ds = small(noise=0.1, offset=2.0, num_samples=20000)
    residual = ds.x - ds.z @ ds.info["atoms"] - ds.info["offset"]
    assert ds.info["offset"].norm().item() == pytest.approx(2.0)
    assert residual.std().item() == pytest.approx(0.1, rel=0.02)
    assert residual.mean(0).abs().max() < 0.01


def test_dense_low_rank_component():
    ds = small(dense_rank=2, dense_scale=1.5)
    basis, factors = ds.info["dense_basis"], ds.info["dense_factors"]
    assert basis.shape == (2, 16) and factors.shape == (2000, 2)
    torch.testing.assert_close(basis @ basis.t(), torch.eye(2))
    torch.testing.assert_close(ds.x, ds.z @ ds.info["atoms"] + 1.5 * factors @ basis)


def test_deterministic_given_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = small(seed=4, noise=0.1)
    assert torch.equal(torch.rand(3), expected), "the simulator consumed the caller's RNG"
    b = small(seed=4, noise=0.1)
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)
    assert not torch.equal(a.info["atoms"], small(seed=5).info["atoms"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=25), r"k must satisfy 1 <= k <= num_atoms=24, got k=25"),
    (dict(k=0), "k must be a positive int"),
    (dict(d_in=0), "d_in"),
    (dict(num_atoms=2.5), "num_atoms"),
    (dict(num_samples=-3), "num_samples"),
    (dict(noise=-0.1), "noise"),
    (dict(min_coefficient=float("nan")), "min_coefficient"),
    (dict(dense_rank=17), "dense_rank"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)
