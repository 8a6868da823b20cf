import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pyrocrl.diagnostics import affine_r2, mcc


def brute_force_mcc(z_true, z_est):
    """Independent reference: try every injective assignment (numpy.corrcoef, no SciPy)."""
    n, m = z_true.shape[1], z_est.shape[1]
    c = np.abs(np.corrcoef(z_true.T, z_est.T)[:n, n:])
    return max(np.mean([c[i, p[i]] for i in range(n)])
               for p in itertools.permutations(range(m), n))


@pytest.fixture
def sources():
    return np.random.default_rng(0).standard_normal((4000, 4))


def test_permutation_sign_and_affine_scaling_give_one(sources):
    perm = [2, 0, 3, 1]
    z_est = sources[:, perm] * np.array([-2.0, 0.5, 3.0, -1.0]) + 7.0
    r = mcc(sources, z_est)
    assert float(r) == pytest.approx(1.0, abs=1e-12)
    # permutation[i] is the estimated column holding true dimension i, signs[i] its sign
    np.testing.assert_array_equal(r.permutation, [1, 3, 0, 2])
    np.testing.assert_array_equal(r.signs, [1.0, -1.0, -1.0, 1.0])


def test_monotone_elementwise_transform_spearman_one_pearson_below(sources):
    z_est = np.stack([np.exp(sources[:, 1]), sources[:, 0] ** 3, np.tanh(sources[:, 3]),
                      -np.exp(2 * sources[:, 2])], axis=1)
    assert float(mcc(sources, z_est, method="spearman")) == pytest.approx(1.0, abs=1e-12)
    assert float(mcc(sources, z_est, method="pearson")) < 0.9


def test_independent_noise_is_near_chance(sources):
    noise = np.random.default_rng(1).standard_normal(sources.shape)
    # each |corr| is ~ |N(0, 1/N)|; the best matching of 4x4 stays far below 0.1
    assert float(mcc(sources, noise)) < 0.06


def test_rotation_is_caught_by_mcc_but_not_by_affine_r2(sources):
    """A 45-degree rotation of two independent unit-variance sources: each estimated
    dimension correlates 1/sqrt(2) with two true ones. MCC must see it, affine R^2 must not."""
    c = np.cos(np.pi / 4)
    rotation = np.eye(4)
    rotation[:2, :2] = [[c, -c], [c, c]]
    z_est = sources @ rotation
    r = mcc(sources, z_est)
    np.testing.assert_allclose(r.per_dim[:2], 1 / np.sqrt(2), atol=0.03)
    np.testing.assert_allclose(r.per_dim[2:], 1.0)
    assert float(affine_r2(sources, z_est)) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("n, m", [(2, 2), (3, 3), (3, 5), (5, 5)])
def test_agrees_with_brute_force(n, m):
    rng = np.random.default_rng(n * 10 + m)
    z_true = rng.standard_normal((300, n))
    z_est = z_true @ rng.standard_normal((n, m)) + rng.standard_normal((300, m))
    assert float(mcc(z_true, z_est)) == pytest.approx(brute_force_mcc(z_true, z_est), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    z=arrays(np.float64, (50, 3), elements=st.floats(-1e3, 1e3)),
    seed=st.integers(0, 2**16),
)
def test_properties(z, seed):
    rng = np.random.default_rng(seed)
    z_est = rng.standard_normal((50, 4))
    r = mcc(z, z_est)
    assert 0.0 <= float(r) <= 1.0 + 1e-12
    # the score ignores the order and signs of the estimated columns
    shuffled = z_est[:, rng.permutation(4)] * rng.choice([-1.0, 1.0], 4)
    assert float(mcc(z, shuffled)) == pytest.approx(float(r), abs=1e-9)
    assert float(mcc(z, z_est, method="spearman")) <= 1.0 + 1e-12


def test_sequences_and_torch_inputs_are_flattened(sources):
    z_seq = sources.reshape(100, 40, 4)
    est = np.random.default_rng(3).standard_normal((100, 40, 4)) + z_seq
    flat = float(mcc(sources, est.reshape(-1, 4)))
    assert float(mcc(torch.as_tensor(z_seq), torch.as_tensor(est))) == pytest.approx(flat)


def test_constant_estimated_dimension_counts_zero(sources):
    z_est = sources.copy()
    z_est[:, 3] = 1.0
    r = mcc(sources, z_est)
    assert r.per_dim.min() == 0.0 and np.isfinite(float(r))


def test_score_behaves_like_a_float(sources):
    r = mcc(sources, sources)
    assert r >= 0.99 and f"{r:.2f}" == "1.00"
    import json

    assert json.loads(json.dumps({"mcc": r}))["mcc"] == pytest.approx(1.0)


@pytest.mark.parametrize("z_est, match", [
    (np.zeros((4000, 3)), "fewer"),
    (np.zeros((10, 4)), "same samples"),
    (np.zeros(4000), "shape"),
    (np.full((4000, 4), np.nan), "NaN"),
])
def test_bad_input(sources, z_est, match):
    with pytest.raises(ValueError, match=match):
        mcc(sources, z_est)


def test_bad_method(sources):
    with pytest.raises(ValueError, match="method"):
        mcc(sources, sources, method="kendall")


def test_affine_r2_scores_held_out_fit(sources):
    rng = np.random.default_rng(2)
    mixing = rng.standard_normal((4, 4))
    assert float(affine_r2(sources, sources @ mixing + 3.0)) == pytest.approx(1.0, abs=1e-9)
    noise = rng.standard_normal(sources.shape)
    assert float(affine_r2(sources, noise)) < 0.02
    squashed = np.tanh(3 * sources)  # monotone but far from affine
    r = affine_r2(sources, squashed)
    assert 0.5 < float(r) < 0.95 and r.per_dim.shape == (4,)


def test_rotation_margin_is_zero_without_variability_and_grows_with_it():
    from pyrocrl import simulate
    from pyrocrl.diagnostics import rotation_margin

    def margin(variance_range, num_domains=20):
        ds = simulate.nonstationary_sources(num_latents=3, num_domains=num_domains,
                                            samples_per_domain=2000, seed=0,
                                            variance_range=variance_range)
        return rotation_margin(ds.z, ds.u)

    # one variance for all domains: the factorial Gaussian prior is rotation invariant
    assert abs(float(margin((1.0, 1.0)))) < 0.01
    # the margin grows with the spread of the variances across domains
    narrow, wide = margin((0.5, 3.0)), margin((0.1, 10.0))
    assert 0.02 < float(narrow) < float(wide)
    assert narrow.pairwise.shape == (3, 3) and np.allclose(narrow.pairwise, narrow.pairwise.T)


def test_rotation_margin_matches_a_hand_computed_two_domain_case():
    """Two domains; in domain a the variances are (4, 1), in domain b (1, 4). Rotating by 45
    degrees makes both coordinates variance 2.5 in each domain, so the mean Gaussian
    log-likelihood drops by 0.5 * (2 log 2.5 - log 4) = log(2.5) - log(2) nats."""
    from pyrocrl.diagnostics import rotation_margin

    rng = np.random.default_rng(0)
    a = rng.standard_normal((200000, 2)) * [2.0, 1.0]
    b = rng.standard_normal((200000, 2)) * [1.0, 2.0]
    z = np.concatenate([a, b])
    u = np.repeat([0, 1], 200000)
    assert float(rotation_margin(z, u)) == pytest.approx(np.log(2.5) - np.log(2.0), abs=0.005)
