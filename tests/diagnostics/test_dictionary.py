import math

import numpy as np
import pytest
import torch

from pyrocrl.diagnostics.dictionary import dictionary_recovery
from pyrocrl.diagnostics.identifiability import Score


def test_hand_worked_case_max_and_one_to_one_differ():
    """True atoms a1 = e1, a2 = (0.95, sqrt(1 - 0.95^2), 0), a3 = e3. Learned atoms
    l1 = -3 e1, l2 = 0.5 e3, l3 = e2. The |cosine| matrix (rows true, columns learned) is

        a1: [1,    0, 0     ]
        a2: [0.95, 0, 0.3122]
        a3: [0,    1, 0     ]

    Best |cos| per true atom: 1, 0.95, 1 -> all three >= 0.9, score 3/3 (a1 and a2 both
    credited to l1; the sign and scale of l1 do not matter). One-to-one: the assignment
    {a1-l1, a2-l3, a3-l2} has total 2.3122, the only other candidate using l1 for a2,
    {a2-l1, a1-l3, a3-l2}, has 1.95; so a2 is matched to l3 at 0.3122 and only 2/3 are
    recovered one-to-one."""
    s = math.sqrt(1 - 0.95**2)
    true = np.array([[1.0, 0, 0], [0.95, s, 0], [0, 0, 1.0]])
    learned = np.array([[-3.0, 0, 0], [0, 0, 0.5], [0, 1.0, 0]])
    r = dictionary_recovery(true, learned, threshold=0.9)
    assert isinstance(r, Score)
    assert float(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r.per_atom, [1.0, 0.95, 1.0])
    np.testing.assert_array_equal(r.best_match, [0, 0, 1])
    np.testing.assert_array_equal(r.assignment, [0, 2, 1])
    np.testing.assert_allclose(r.matched, [1.0, s, 1.0])
    assert r.matched_fraction == pytest.approx(2 / 3)
    assert r.mean_max_cosine == pytest.approx((1 + 0.95 + 1) / 3)
    assert r.cosine[0, 0] == pytest.approx(-1.0)  # signed matrix is kept
    # a stricter threshold drops a2: 2/3
    assert float(dictionary_recovery(true, learned, threshold=0.96)) == pytest.approx(2 / 3)


def test_torch_and_numpy_inputs_agree_and_scale_is_irrelevant():
    rng = np.random.default_rng(0)
    true = rng.standard_normal((5, 7))
    learned = rng.standard_normal((9, 7))
    a = dictionary_recovery(true, learned, threshold=0.3)
    b = dictionary_recovery(torch.tensor(true * 4.0), torch.tensor(learned) * -0.1,
                            threshold=0.3)
    np.testing.assert_allclose(a.per_atom, b.per_atom)
    assert float(a) == float(b)


def test_perfect_recovery_up_to_permutation_sign_and_scale():
    rng = np.random.default_rng(1)
    true = rng.standard_normal((6, 10))
    learned = np.vstack([true[[3, 0, 5, 1, 4, 2]] * rng.choice([-2.0, 0.5], size=(6, 1)),
                         rng.standard_normal((4, 10))])  # plus 4 spare features
    r = dictionary_recovery(true, learned)
    assert float(r) == 1.0 and r.matched_fraction == 1.0
    np.testing.assert_array_equal(r.assignment, [1, 3, 5, 0, 4, 2])


def test_random_dictionary_recovers_nothing():
    """Detects failure: |cos| between independent random unit vectors in R^32 has sd
    1/sqrt(32) ~ 0.18, and P(|cos| >= 0.9) ~ 1e-10, so none of 48 x 64 pairs passes."""
    rng = np.random.default_rng(2)
    r = dictionary_recovery(rng.standard_normal((48, 32)), rng.standard_normal((64, 32)))
    assert float(r) == 0.0 and r.matched_fraction == 0.0
    assert 0.3 < r.mean_max_cosine < 0.8


def test_zero_atoms_and_fewer_learned_than_true():
    true = np.eye(3)
    learned = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    r = dictionary_recovery(true, learned)
    assert np.isfinite(r.cosine).all() and r.cosine[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert float(r) == pytest.approx(1 / 3)
    # 2 learned atoms can match at most 2 of the 3 true ones; the unmatched gets -1 and 0
    assert (r.assignment == -1).sum() == 1
    assert r.matched[r.assignment == -1].tolist() == [0.0]
    assert r.matched_fraction == pytest.approx(1 / 3)


@pytest.mark.parametrize("true, learned, kwargs, match", [
    (np.eye(3), np.eye(4), {}, r"true_atoms has d_in=3 but learned_atoms has d_in=4"),
    (np.eye(3), np.ones(3), {}, r"learned_atoms must have shape \(num_atoms, d_in\)"),
    (np.full((2, 3), np.nan), np.eye(3), {}, "true_atoms contains NaN"),
    (np.eye(3), np.eye(3), dict(threshold=1.5), "threshold"),
])
def test_bad_input_raises(true, learned, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dictionary_recovery(true, learned, **kwargs)
