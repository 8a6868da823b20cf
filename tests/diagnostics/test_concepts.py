import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from scipy.stats import pearsonr
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from pyrocrl.diagnostics.concepts import (
    concept_alignment,
    posterior_linearity,
    probe_accuracy,
    sae_concept_correlation,
)

# ---------------------------------------------------------------- posterior_linearity


@pytest.fixture
def log_post():
    """log p(z | x) over K = 4 joint configurations (two binary concepts), N = 1000."""
    logits = np.random.default_rng(0).normal(size=(1000, 4)) * 2.0
    return log_softmax(logits, axis=1)


def test_posterior_linearity_exact_affine_features_give_one(log_post):
    # f = A log p + b with A (4 x 6) of full column rank: log p = A^+ (f - b) exactly.
    rng = np.random.default_rng(1)
    features = log_post @ rng.normal(size=(4, 6)) + rng.normal(size=6)
    r = posterior_linearity(features, log_post)
    assert float(r) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(r.per_output, 1.0, atol=1e-9)
    assert r.n_test == 500
    # torch input gives the same number
    assert float(posterior_linearity(torch.tensor(features), torch.tensor(log_post))) == \
        pytest.approx(float(r), abs=1e-12)


def test_posterior_linearity_unrelated_features_near_zero(log_post):
    features = np.random.default_rng(2).normal(size=(1000, 5))
    r = posterior_linearity(features, log_post)
    assert float(r) < 0.1
    assert float(r) > -0.1


def test_posterior_linearity_is_variance_weighted():
    # column 0 = feature 0 exactly (R^2 = 1, variance 1); column 1 = 3 * independent noise
    # (R^2 ~ 0, variance 9). Variance weighting: (1 * 1 + 9 * 0) / (1 + 9) = 0.1, whereas a
    # plain mean over outputs would give ~0.5.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 2))
    y = np.stack([x[:, 0], 3.0 * rng.normal(size=4000)], axis=1)
    r = posterior_linearity(x, y, test_size=0.5, seed=7)
    assert float(r) == pytest.approx(0.1, abs=0.02)
    assert r.per_output[0] == pytest.approx(1.0, abs=1e-12)
    assert abs(r.per_output[1]) < 0.02
    # independent reference: sklearn on the documented split
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=7)
    coef, *_ = np.linalg.lstsq(np.c_[x_tr, np.ones(len(x_tr))], y_tr, rcond=None)
    pred = np.c_[x_te, np.ones(len(x_te))] @ coef
    assert float(r) == pytest.approx(r2_score(y_te, pred, multioutput="variance_weighted"),
                                     abs=1e-10)


def test_posterior_linearity_constant_column_is_nan_and_unweighted(log_post):
    features = log_post @ np.random.default_rng(4).normal(size=(4, 6))
    target = np.c_[log_post, np.full(len(log_post), np.log(0.25))]
    r = posterior_linearity(features, target)
    assert np.isnan(r.per_output[-1])
    assert float(r) == pytest.approx(1.0, abs=1e-9)


def test_posterior_linearity_errors(log_post):
    features = np.random.default_rng(5).normal(size=(1000, 3))
    bad = log_post.copy()
    bad[3, 1] = -np.inf
    with pytest.raises(ValueError, match="observation noise"):
        posterior_linearity(features, bad)
    with pytest.raises(ValueError, match="NaN"):
        posterior_linearity(features, np.where(bad == -np.inf, np.nan, bad))
    with pytest.raises(ValueError, match="same number of samples"):
        posterior_linearity(features[:999], log_post)
    with pytest.raises(ValueError, match=r"log_posterior must have shape \(N, K\)"):
        posterior_linearity(features, log_post[:, 0])
    with pytest.raises(ValueError, match="constant"):
        posterior_linearity(features, np.ones((1000, 2)))
    with pytest.raises(ValueError, match="too few"):
        posterior_linearity(features[:6], log_post[:6])
    with pytest.raises(ValueError, match="test_size"):
        posterior_linearity(features, log_post, test_size=1.0)


# ---------------------------------------------------------------------- probe_accuracy


def test_probe_accuracy_separable_concepts_give_one():
    rng = np.random.default_rng(6)
    concepts = rng.integers(0, 2, size=(600, 3))
    # feature j = +-1 for concept j plus small noise; two nuisance dims; margin 1 >> noise
    features = np.c_[2.0 * concepts - 1 + 0.05 * rng.normal(size=(600, 3)),
                     rng.normal(size=(600, 2))] @ rng.normal(size=(5, 5))
    r = probe_accuracy(features, concepts)
    assert float(r) == 1.0
    np.testing.assert_array_equal(r.per_concept, 1.0)
    # chance is the majority-class rate on the documented test split
    _, test = train_test_split(np.arange(600), test_size=0.5, random_state=0)
    rate = concepts[test].mean(0)
    np.testing.assert_allclose(r.chance, np.maximum(rate, 1 - rate))
    # bool concepts and a single 1-D concept work too
    assert float(probe_accuracy(features, concepts.astype(bool))) == 1.0
    assert float(probe_accuracy(torch.tensor(features), concepts[:, 1])) == 1.0


def test_probe_accuracy_random_features_near_chance():
    rng = np.random.default_rng(7)
    concepts = np.c_[rng.random(2000) < 0.5, rng.random(2000) < 0.8].astype(int)
    r = probe_accuracy(rng.normal(size=(2000, 4)), concepts)
    assert r.chance[0] == pytest.approx(0.5, abs=0.05)
    assert r.chance[1] == pytest.approx(0.8, abs=0.05)
    # a probe on noise cannot beat the majority class by much (sd of accuracy ~ 0.016)
    np.testing.assert_array_less(np.abs(r.per_concept - r.chance), 0.05)


def test_probe_accuracy_errors():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(100, 3))
    three_valued = rng.integers(0, 2, size=(100, 2))
    three_valued[5, 1] = 2
    with pytest.raises(ValueError, match=r"binary.*such as \[2\]"):
        probe_accuracy(x, three_valued)
    with pytest.raises(ValueError, match="binary"):
        probe_accuracy(x, np.where(rng.random((100, 1)) < 0.5, -1, 1))
    with pytest.raises(ValueError, match="same number of samples"):
        probe_accuracy(x, rng.integers(0, 2, size=(99, 1)))
    with pytest.raises(ValueError, match="concept column 1 .* is constant"):
        probe_accuracy(x, np.c_[rng.integers(0, 2, 100), np.ones(100)])


# ------------------------------------------------------------------- concept_alignment


def _pairs(directions, n_pairs_per_concept, rng, noise=0.0):
    """Counterfactual pairs for f(x) = sum_j z_j directions_j + nuisance: pair k flips only
    concept i from 0 (a) to 1 (b); all other concepts and the nuisance are shared."""
    n, d = directions.shape
    fa, fb, concept = [], [], []
    for i in range(n):
        z = rng.integers(0, 2, size=(n_pairs_per_concept, n)).astype(float)
        z[:, i] = 0.0
        base = z @ directions + 0.3 * rng.normal(size=(n_pairs_per_concept, d))
        fa.append(base + noise * rng.normal(size=base.shape))
        fb.append(base + directions[i] + noise * rng.normal(size=base.shape))
        concept.append(np.full(n_pairs_per_concept, i))
    return np.vstack(fa), np.vstack(fb), np.concatenate(concept)


def test_concept_alignment_orthogonal_directions_give_identity():
    rng = np.random.default_rng(9)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    directions = 2.0 * q[:4]                     # 4 orthogonal concept directions in R^8
    fa, fb, concept = _pairs(directions, 40, rng, noise=0.05)
    r = concept_alignment(fa, fb, concept)
    assert r.matrix.shape == (4, 4)
    assert float(r) > 0.95
    assert r.off_diagonal_mean_abs < 0.1
    assert r.identity_error < 0.05
    # the directions recovered are the true ones
    np.testing.assert_allclose(np.abs(np.sum(r.directions * q[:4], axis=1)), 1.0, atol=0.01)


def test_concept_alignment_shared_direction_is_not_identity():
    rng = np.random.default_rng(10)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    directions = 2.0 * q[:3]
    directions[1] = directions[0]                # concepts 0 and 1 are encoded identically
    fa, fb, concept = _pairs(directions, 40, rng, noise=0.05)
    r = concept_alignment(fa, fb, concept)
    assert r.matrix[0, 1] > 0.8 and r.matrix[1, 0] > 0.8
    assert r.identity_error > 0.25


def test_concept_alignment_hand_worked_two_pairs():
    # One pair per concept with f(a) = 0. A logistic regression on the two points {0, b}
    # depends on w only through w . b and the penalty |w|^2, so w is parallel to b:
    # W_i = Lambda_i = b_i / |b_i|.
    # Orthogonal: b_0 = (1, 0), b_1 = (0, 2) -> M = I exactly.
    fa = np.zeros((2, 2))
    r = concept_alignment(fa, np.array([[1.0, 0.0], [0.0, 2.0]]), [0, 1])
    np.testing.assert_allclose(r.matrix, np.eye(2), atol=1e-5)
    assert r.identity_error == pytest.approx(0.0, abs=1e-5)
    # Shared at 45 degrees: b_0 = (1, 0), b_1 = (1, 1) -> M = [[1, c], [c, 1]], c = 1/sqrt 2;
    # off-diagonal mean |M| = c; identity error = sqrt(2 c^2) / 2 = 1/2.
    r = concept_alignment(fa, np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([0, 1]))
    c = 1 / np.sqrt(2)
    np.testing.assert_allclose(r.matrix, [[1.0, c], [c, 1.0]], atol=1e-5)
    assert float(r) == pytest.approx(1.0, abs=1e-5)
    assert r.off_diagonal_mean_abs == pytest.approx(c, abs=1e-5)
    assert r.identity_error == pytest.approx(0.5, abs=1e-5)


def test_concept_alignment_errors():
    fa, fb = np.zeros((4, 3)), np.eye(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        concept_alignment(fa, fb[:, :2], [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"shape \(P,\) = \(4,\)"):
        concept_alignment(fa, fb, [0, 1, 1])
    with pytest.raises(ValueError, match="integer"):
        concept_alignment(fa, fb, [0.5, 1, 1, 0])
    with pytest.raises(ValueError, match=">= 0"):
        concept_alignment(fa, fb, [-1, 1, 1, 0])
    with pytest.raises(ValueError, match=r"concepts \[1\] have no pair"):
        concept_alignment(fa, fb, [0, 2, 2, 0])
    with pytest.raises(ValueError, match="averages to zero"):
        concept_alignment(fa, fa, [0, 0, 1, 1])


# ------------------------------------------------------------- sae_concept_correlation


@pytest.fixture
def logits():
    return np.random.default_rng(11).normal(size=(2000, 3))


def test_sae_exp_inverse_features_recover_permutation(logits):
    rng = np.random.default_rng(12)
    n_samples = len(logits)
    # feature = log(a * logit + c) with a > 0 and a * logit + c > 0, so exp(feature) is an
    # affine function of the logit with positive slope: Pearson correlation exactly 1.
    a, c = np.array([0.5, 2.0, 1.0]), 10.0
    exact = np.log(a * logits + c)
    assert (a * logits + c > 0).all()
    # place concept i at feature column perm[i] among 6 columns; others are noise
    perm = np.array([4, 0, 2])
    features = rng.normal(size=(n_samples, 6))
    features[:, perm] = exact
    r = sae_concept_correlation(features, logits)
    np.testing.assert_array_equal(r.assignment, perm)
    np.testing.assert_allclose(r.per_concept, 1.0, atol=1e-12)
    assert r.coverage == 1.0
    # the identity transform sees log(.) only: correlation close to, but below, 1
    r_id = sae_concept_correlation(features, logits, transform="identity")
    assert (r_id.per_concept < 1 - 1e-4).all()


def test_sae_matches_scipy_pearsonr(logits):
    rng = np.random.default_rng(13)
    features = 0.5 * logits[:, [1, 0, 2, 2]] + rng.normal(size=(2000, 4))
    r = sae_concept_correlation(features, logits)
    for i in range(3):
        for j in range(4):
            ref = pearsonr(logits[:, i], np.exp(features[:, j])).statistic
            assert r.correlation[i, j] == pytest.approx(ref, abs=1e-12)
    assert float(r) == pytest.approx(r.correlation[[0, 1, 2], r.assignment].mean())


def test_sae_coverage_by_hand(logits):
    # identity transform: concepts 0 and 1 have an exact feature (PCC 1), concept 2 has only
    # independent noise features (|PCC| ~ 1/sqrt(2000) ~ 0.02). Coverage at 0.5 = 2/3, and
    # the mean is (1 + 1 + small) / 3.
    rng = np.random.default_rng(14)
    features = np.c_[3 * logits[:, 1] - 1, rng.normal(size=(2000, 2)), logits[:, 0]]
    r = sae_concept_correlation(features, logits, transform="identity", threshold=0.5)
    assert r.assignment[0] == 3 and r.assignment[1] == 0
    assert r.coverage == pytest.approx(2 / 3)
    assert float(r) == pytest.approx((2 + r.per_concept[2]) / 3)
    assert abs(r.per_concept[2]) < 0.1
    # threshold above the noise level but below 1 -> still 2/3; above 1 -> 0
    assert sae_concept_correlation(features, logits, "identity", 0.99).coverage == \
        pytest.approx(2 / 3)
    assert sae_concept_correlation(features, logits, "identity", 1.01).coverage == 0.0


def test_sae_anticorrelated_feature_is_not_the_concept(logits):
    rng = np.random.default_rng(15)
    x = logits[:, :1]
    # only one feature, exactly -logit: signed score -1, nothing covered
    r = sae_concept_correlation(-x, x, transform="identity")
    assert float(r) == pytest.approx(-1.0)
    assert r.coverage == 0.0
    # with a noise feature available, the assignment prefers it (corr ~ 0 > -1)
    r = sae_concept_correlation(np.c_[-x, rng.normal(size=(2000, 1))], x, transform="identity")
    assert r.assignment[0] == 1


def test_sae_exp_does_not_overflow(logits):
    # exp(1000 + log(logit + 10)) overflows float64; shifting each column by its max does
    # not change the correlation, which stays exactly 1.
    features = 1000.0 + np.log(logits + 10.0)
    with np.errstate(over="raise"):
        r = sae_concept_correlation(features, logits)
    np.testing.assert_allclose(r.per_concept, 1.0, atol=1e-12)
    # and torch input works
    r_t = sae_concept_correlation(torch.tensor(features), torch.tensor(logits))
    np.testing.assert_allclose(r_t.per_concept, r.per_concept)


def test_sae_errors(logits):
    with pytest.raises(ValueError, match="fewer than the 3 concepts"):
        sae_concept_correlation(logits[:, :2], logits)
    with pytest.raises(ValueError, match="same number of samples"):
        sae_concept_correlation(logits[:-1], logits)
    with pytest.raises(ValueError, match="transform"):
        sae_concept_correlation(logits, logits, transform="log")
    with pytest.raises(ValueError, match="sae_features must have shape"):
        sae_concept_correlation(logits[:, 0], logits)
