r"""Do learned features encode latent *concepts* linearly? Diagnostics for the claims of
"I Predict Therefore I Am" (next-token-prediction features are linear in the log-posterior of
latent concepts).

The paper's Theorem 3.1 says that, under a diversity condition, the features :math:`f(x)` that
next-token prediction learns satisfy

.. math:: f(x) \approx A \, \log p(\mathbf z \mid x) + b,

where :math:`\log p(\mathbf z \mid x) \in \mathbb R^K` stacks the log-posterior of all
:math:`K` joint configurations of the discrete latent concepts. Consequences checked here:

* :func:`posterior_linearity` -- Theorem 3.1 itself, when the exact posterior is known
  (simulations): held-out :math:`R^2` of an affine map from :math:`f(x)` to
  :math:`\log p(\mathbf z \mid x)`;
* :func:`probe_accuracy` -- Corollary 4.3 / Fig. 2: each concept is linearly decodable;
* :func:`concept_alignment` -- Corollary 4.3 with counterfactual pairs (App. F, G.2): probe
  weights :math:`W` and concept directions :math:`\Lambda` satisfy
  :math:`W \Lambda^\top \approx I`;
* :func:`sae_concept_correlation` -- App. H.2: Hungarian-matched Pearson correlation between
  :math:`\exp` of sparse-autoencoder features and probe logits.

Like every diagnostic, these only take arrays (NumPy or torch), never a model.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pyrocrl.diagnostics.identifiability import Score, _cross_correlation, _numpy, as_samples

__all__ = ["concept_alignment", "posterior_linearity", "probe_accuracy",
           "sae_concept_correlation"]


def _same_samples(fn: str, name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{fn}: {name_a} and {name_b} must have the same number of samples; "
                         f"got {a.shape[0]} and {b.shape[0]} (after flattening leading dims)")


def _check_test_size(fn: str, test_size: float) -> None:
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"{fn}: test_size must lie in (0, 1), got {test_size}")


def posterior_linearity(features, log_posterior, test_size: float = 0.5, seed: int = 0,
                        alpha: float = 0.0) -> Score:
    r"""Theorem 3.1: how well an affine map of the features predicts the exact log-posterior.

    Fits :math:`\log p(\mathbf z \mid x) \approx C f(x) + c` by ordinary least squares
    (scikit-learn ``LinearRegression``) on a random ``1 - test_size`` of the samples and
    reports, on the held-out rest, the variance-weighted coefficient of determination

    .. math:: R^2 = 1 - \frac{\sum_k \sum_{i \in \text{test}} (y_{ik} - \hat y_{ik})^2}
                          {\sum_k \sum_{i \in \text{test}} (y_{ik} - \bar y_k)^2},

    which equals scikit-learn's ``r2_score(..., multioutput="variance_weighted")``: outputs
    that vary more count more, and a column that is constant on the test split (zero
    denominator, e.g. a configuration whose posterior never changes) carries no weight.

    Direction and equivalence: Theorem 3.1 writes :math:`f = A \log p + b`; when :math:`A` has
    full column rank (the diversity condition), :math:`\log p = A^{+}(f - b)` exactly, so the
    score is 1 up to **any affine map** between features and log-posterior and does not reward
    a merely nonlinear relation. Regressing *from* the features *to* the log-posterior (as
    :func:`~pyrocrl.diagnostics.affine_r2` regresses estimated → true) asks whether the
    posterior is linearly *decodable*; the reverse regression would also be high for features
    that discard part of the posterior. Plain least squares (no ridge shrinkage) is used so an
    exact relation scores exactly 1; rank-deficient features are handled by its minimum-norm
    solution. The target is used as given: pass the log-posterior over the :math:`K` joint
    configurations, per-concept log-odds, or a centred log-posterior (each row minus its mean,
    removing the per-sample normaliser :math:`\log \sum_z e^{s_z}` that is *not* linear in
    logits) -- whichever form your claim is about.

    Args:
        features: ``(N, d)`` features (or ``(N, T, d)``, leading dims flattened).
        log_posterior: ``(N, K)`` exact log-posterior values (same leading dims); must be
            finite.
        test_size: fraction of samples held out (``sklearn.model_selection.train_test_split``).
        seed: ``random_state`` of the split.
        alpha: ridge penalty (``sklearn.linear_model.Ridge``); ``0`` is plain least squares.
            Features of a ReLU network are often nearly collinear and the minimum-norm
            least-squares map can extrapolate wildly to held-out points (we measured held-out
            R² of 0.14 with ``alpha=0`` where ``alpha=1e-3`` gives 0.91 on the same features);
            a small ``alpha`` fixes that.

    Read it against a null: in seed 004's G.1 simulation with bit-flip noise the
    log-posterior is almost an affine function of ``x`` itself (each agreeing bit adds a
    constant to :math:`\log p(c \mid x)`), so raw inputs and even an *untrained* network's
    features reach R² near 1 (``benchmarks/concepts.py`` reports both). A high score then
    says the features kept the information, not that training produced the linear structure.

    Returns:
        :class:`Score`: the held-out variance-weighted :math:`R^2` (can be negative), with
        ``per_output`` (``(K,)`` held-out :math:`R^2` per column; NaN for columns constant on
        the test split), ``test_variance`` (``(K,)``, the weights) and ``n_test``.
    """
    fn = "posterior_linearity"
    _check_test_size(fn, test_size)
    raw = _numpy(log_posterior).astype(np.float64)
    if raw.ndim < 2:
        raise ValueError(f"{fn}: log_posterior must have shape (N, K) (one column per latent "
                         f"configuration or concept), got {raw.shape}")
    if np.isnan(raw).any():
        raise ValueError(f"{fn}: log_posterior contains NaN")
    if not np.isfinite(raw).all():
        raise ValueError(
            f"{fn}: log_posterior contains ±inf (shape {raw.shape}); -inf means some latent "
            f"configuration has zero posterior probability, e.g. z is a deterministic function "
            f"of x. A log of 0 is no regression target: add observation noise to the generative "
            f"model so every configuration keeps positive posterior mass (or drop those columns)")
    x = as_samples("features", features)
    y = as_samples("log_posterior", raw)
    _same_samples(fn, "features", x, "log_posterior", y)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size,
                                                        random_state=seed)
    if not alpha >= 0:
        raise ValueError(f"{fn}: alpha must be >= 0, got {alpha}")
    if len(x_test) < 2 or (alpha == 0 and len(x_train) <= x.shape[1]):
        raise ValueError(f"{fn}: {x.shape[0]} samples are too few for a held-out affine fit of "
                         f"{x.shape[1]} feature dimensions (need more than {x.shape[1]} "
                         f"training and at least 2 test samples; or use alpha > 0)")
    sst = ((y_test - y_test.mean(0)) ** 2).sum(0)
    varying = sst > 1e-12 * max(1.0, float(np.abs(y_test).max()) ** 2) * len(y_test)
    if not varying.any():
        raise ValueError(f"{fn}: every column of log_posterior (shape {y.shape}) is constant on "
                         f"the test split; there is nothing for the features to explain")
    regression = LinearRegression() if alpha == 0 else Ridge(alpha=alpha)
    sse = ((y_test - regression.fit(x_train, y_train).predict(x_test)) ** 2).sum(0)
    per_output = np.full(y.shape[1], np.nan)
    per_output[varying] = 1.0 - sse[varying] / sst[varying]
    value = 1.0 - sse[varying].sum() / sst[varying].sum()
    return Score(value, per_output=per_output, test_variance=sst / len(y_test),
                 n_test=len(y_test))


def probe_accuracy(features, concepts, test_size: float = 0.5, seed: int = 0, C: float = 1.0,
                   max_iter: int = 1000) -> Score:
    r"""Corollary 4.3 / Fig. 2: held-out accuracy of one linear probe per binary concept.

    For each concept column :math:`j` fits a logistic regression
    :math:`p(z_j = 1 \mid x) = \sigma(w_j^\top \tilde f(x) + c_j)` on a random ``1 - test_size``
    of the samples and reports the accuracy of :math:`\mathbb 1[w_j^\top \tilde f + c_j > 0]`
    on the held-out rest. :math:`\tilde f` are the features **standardised** with a
    ``StandardScaler`` fitted on the training split (in a scikit-learn ``Pipeline``, so nothing
    leaks from the test split), which makes the L2 penalty ``C`` act equally on every feature
    and the solver converge; it does not change which concepts are linearly separable.

    Equivalence it measures up to: any **invertible affine** re-parametrisation of the features
    leaves the set of linear decision rules unchanged (up to the effect of the L2 penalty), so
    a score of 1 means "linearly decodable", not "disentangled". All concepts share one split,
    drawn as ``train_test_split(numpy.arange(N), test_size=test_size, random_state=seed)``.

    Args:
        features: ``(N, d)`` features (or ``(N, T, d)``, leading dims flattened).
        concepts: ``(N, n)`` binary concept values in {0, 1} (bool allowed); a 1-D ``(N,)``
            array is one concept.
        test_size: fraction of samples held out.
        seed: ``random_state`` of the split.
        C: inverse L2 strength of ``LogisticRegression``.
        max_iter: iteration cap of ``LogisticRegression``.

    Returns:
        :class:`Score`: mean held-out accuracy over concepts, with ``per_concept`` (``(n,)``),
        ``chance`` (``(n,)``, the majority-class rate of each concept *on the test split* --
        what a constant predictor scores), ``chance_mean`` and ``n_test``.
    """
    fn = "probe_accuracy"
    _check_test_size(fn, test_size)
    z = _numpy(concepts)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim < 2:
        raise ValueError(f"{fn}: concepts must have shape (N, n), got {z.shape}")
    z = z.reshape(-1, z.shape[-1])
    if z.dtype == bool:
        z = z.astype(np.int64)
    if not np.isin(z, (0, 1)).all():
        values = np.unique(z[~np.isin(z, (0, 1))])[:5]
        raise ValueError(f"{fn}: concepts (shape {z.shape}) must be binary with values in "
                         f"{{0, 1}}; found other values such as {values.tolist()}")
    z = z.astype(np.int64)
    x = as_samples("features", features)
    _same_samples(fn, "features", x, "concepts", z)
    train, test = train_test_split(np.arange(len(x)), test_size=test_size, random_state=seed)
    if len(test) < 1 or len(train) < 2:
        raise ValueError(f"{fn}: {len(x)} samples are too few for a held-out probe")
    per_concept, chance = np.empty(z.shape[1]), np.empty(z.shape[1])
    for j in range(z.shape[1]):
        if np.unique(z[train, j]).size < 2:
            where = "is constant" if np.unique(z[:, j]).size < 2 else \
                "takes one value on the training split"
            raise ValueError(f"{fn}: concept column {j} of concepts (shape {z.shape}) {where}; "
                             f"a probe needs both classes (try another seed or test_size)")
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        probe.fit(x[train], z[train, j])
        per_concept[j] = np.mean(probe.predict(x[test]) == z[test, j])
        rate = z[test, j].mean()
        chance[j] = max(rate, 1.0 - rate)
    return Score(per_concept.mean(), per_concept=per_concept, chance=chance,
                 chance_mean=float(chance.mean()), n_test=len(test))


def concept_alignment(features_a, features_b, concept, n_concepts: int | None = None,
                      C: float = 1.0, max_iter: int = 1000) -> Score:
    r"""Corollary 4.3 with counterfactual pairs: do probe weights invert concept directions,
    :math:`W \Lambda^\top \approx I`?

    Pair :math:`k` is :math:`(a_k, b_k)`, two inputs that differ only in concept
    :math:`i = \texttt{concept}[k]`. **Convention:** :math:`a_k` has that concept equal to 0 and
    :math:`b_k` has it equal to 1 (e.g. a = "man", b = "woman" for male→female). Then, following
    the paper (Sec. 5, App. G.2), for each concept :math:`i` with pairs :math:`P_i`:

    * concept direction (Corollary 4.2 / F.1):
      :math:`\Lambda_i = \bar\delta_i / \lVert \bar\delta_i \rVert` with
      :math:`\bar\delta_i = \frac{1}{|P_i|}\sum_{k \in P_i} f(b_k) - f(a_k)`;
    * probe weight (Corollary 4.3 / F.2): :math:`W_i = w_i / \lVert w_i \rVert`, where
      :math:`w_i` is the weight vector (intercept excluded) of an L2 logistic regression that
      labels :math:`\{f(a_k)\}_{k \in P_i}` 0 and :math:`\{f(b_k)\}_{k \in P_i}` 1. It is fitted
      on **all** pairs of the concept, as in the paper: the result is a geometric comparison of
      two estimates of one direction, not a generalisation score (use :func:`probe_accuracy`
      for that). Features are **not** standardised here, because :math:`W \Lambda^\top` is an
      inner product in the raw feature space.

    Returns the matrix :math:`M = W \Lambda^\top` (``n x n``, :math:`M_{ij} = \langle W_i,
    \Lambda_j\rangle \in [-1, 1]`, the cosine between probe :math:`i` and direction :math:`j`).
    The paper expects :math:`M \approx I`: each probe aligned with its own concept's direction
    (diagonal near 1) and blind to the others' (off-diagonal near 0).

    Equivalence it measures up to: per-concept positive **scale** of :math:`W` and
    :math:`\Lambda` (the softmax scaling of Corollary 4.3), and any **orthogonal** map of the
    features; it is *not* invariant to general linear maps (a shear changes the cosines).
    Swapping :math:`a` and :math:`b` for every pair of a concept flips both :math:`W_i` and
    :math:`\Lambda_i` and leaves :math:`M` unchanged; mixing orientations within one concept
    cancels its mean difference and breaks the score.

    Args:
        features_a: ``(P, d)`` features of the concept-0 member of each pair.
        features_b: ``(P, d)`` features of the concept-1 member of each pair.
        concept: ``(P,)`` integer concept index of each pair, in ``0 .. n_concepts - 1``;
            every concept needs at least one pair.
        n_concepts: number of concepts ``n``; default ``concept.max() + 1``.
        C, max_iter: passed to ``sklearn.linear_model.LogisticRegression``.

    Returns:
        :class:`Score`: the mean diagonal of :math:`M`, with ``matrix`` (``(n, n)``),
        ``diagonal_mean``, ``off_diagonal_mean_abs`` (mean :math:`|M_{ij}|`, :math:`i \ne j`;
        NaN when ``n == 1``), ``identity_error`` (:math:`\lVert M - I\rVert_F / n`),
        ``directions`` (:math:`\Lambda`, ``(n, d)``) and ``weights`` (:math:`W`, ``(n, d)``).
    """
    fn = "concept_alignment"
    fa, fb = as_samples("features_a", features_a), as_samples("features_b", features_b)
    if fa.shape != fb.shape:
        raise ValueError(f"{fn}: features_a and features_b must have the same shape (P, d), "
                         f"one row per pair; got {fa.shape} and {fb.shape}")
    labels = _numpy(concept)
    if labels.ndim != 1 or labels.shape[0] != fa.shape[0]:
        raise ValueError(f"{fn}: concept must have shape (P,) = ({fa.shape[0]},), one concept "
                         f"index per pair; got {labels.shape}")
    if labels.dtype == bool or not (np.issubdtype(labels.dtype, np.integer)
                                    or np.all(np.mod(labels, 1) == 0)):
        raise ValueError(f"{fn}: concept (shape {labels.shape}) must hold integer concept "
                         f"indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"{fn}: concept indices must be >= 0, got {labels.min()}")
    n = int(labels.max()) + 1 if n_concepts is None else int(n_concepts)
    if labels.max() >= n:
        raise ValueError(f"{fn}: concept index {labels.max()} out of range for "
                         f"n_concepts={n}")
    counts = np.bincount(labels, minlength=n)
    if (counts == 0).any():
        raise ValueError(f"{fn}: concepts {np.flatnonzero(counts == 0).tolist()} have no pair "
                         f"in concept (shape {labels.shape}); every concept 0..{n - 1} needs "
                         f"at least one")
    d = fa.shape[1]
    directions, weights = np.empty((n, d)), np.empty((n, d))
    for i in range(n):
        a, b = fa[labels == i], fb[labels == i]
        delta = (b - a).mean(0)
        norm = np.linalg.norm(delta)
        if not norm > 0:
            raise ValueError(f"{fn}: features_b - features_a averages to zero over the pairs of "
                             f"concept {i}; it has no direction")
        directions[i] = delta / norm
        probe = LogisticRegression(C=C, max_iter=max_iter)
        probe.fit(np.vstack([a, b]), np.r_[np.zeros(len(a)), np.ones(len(b))])
        w = probe.coef_.ravel()
        norm = np.linalg.norm(w)
        if not norm > 0:
            raise ValueError(f"{fn}: the probe for concept {i} has zero weights; its pairs "
                             f"are not separable at all")
        weights[i] = w / norm
    matrix = weights @ directions.T
    diagonal = float(np.mean(np.diag(matrix)))
    off = matrix[~np.eye(n, dtype=bool)]
    return Score(diagonal, matrix=matrix, diagonal_mean=diagonal,
                 off_diagonal_mean_abs=float(np.mean(np.abs(off))) if n > 1 else float("nan"),
                 identity_error=float(np.linalg.norm(matrix - np.eye(n)) / n),
                 directions=directions, weights=weights)


def sae_concept_correlation(sae_features, probe_logits, transform: str = "exp",
                            threshold: float = 0.5) -> Score:
    r"""App. H.2: Hungarian-matched Pearson correlation between transformed sparse-autoencoder
    features and concept-probe logits.

    With :math:`h(x) \in \mathbb R^m` the SAE features and :math:`\ell(x) \in \mathbb R^n` the
    logits of :math:`n` concept probes (unnormalised :math:`\log p(z_i \mid x)`, e.g. the
    ``decision_function`` of probes fitted on counterfactual pairs as in
    :func:`concept_alignment`), computes the ``(n, m)`` matrix

    .. math:: R_{ij} = \operatorname{corr}\big(\ell_i,\; g(h_j)\big), \qquad
              g = \exp \text{ (the paper) or the identity},

    over the ``N`` samples, then the one-to-one assignment :math:`\pi` of concepts to distinct
    features maximising :math:`\sum_i R_{i\pi(i)}` (``scipy.optimize.linear_sum_assignment`` on
    the rectangular matrix), and reports the mean assigned correlation.

    Sign convention: the assignment maximises the **signed** correlation and the score is
    signed, so it lies in [-1, 1]. A feature *anti*-correlated with a concept is not that
    concept (its activation marks the concept's absence), so it earns no credit; this is the
    one place this differs from :func:`~pyrocrl.diagnostics.mcc`, which uses :math:`|R|`.

    Overflow: :math:`\exp` of large activations overflows float64 (above ~709). Pearson
    correlation is invariant to positive per-column scaling, and
    :math:`e^{h_j - c_j} = e^{-c_j} e^{h_j}`, so each column is shifted by its maximum
    :math:`c_j = \max_x h_j(x)` before exponentiating; the correlation is unchanged and every
    value lies in (0, 1]. A column that is constant (after the transform) correlates 0.

    Equivalence it measures up to: per-feature positive **affine** maps of :math:`g(h_j)` (and,
    for ``"exp"``, additive shifts of :math:`h_j`) and **permutations** of the features. The
    matching uses the probe logits -- by design of the metric, as the probes *define* the
    concepts.

    Args:
        sae_features: ``(N, m)`` SAE latent features (or ``(N, T, m)``, flattened).
        probe_logits: ``(N, n)`` concept-probe logits with ``n <= m``.
        transform: ``"exp"`` (paper) or ``"identity"``.
        threshold: a concept is *covered* if its assigned correlation is ``>= threshold``.

    Returns:
        :class:`Score`: mean assigned correlation, with ``per_concept`` (``(n,)``),
        ``assignment`` (``(n,)``, the feature index matched to each concept), ``coverage``
        (fraction of concepts with ``per_concept >= threshold``), ``correlation`` (the
        ``(n, m)`` matrix :math:`R`), ``transform`` and ``threshold``.
    """
    fn = "sae_concept_correlation"
    if transform not in ("exp", "identity"):
        raise ValueError(f"{fn}: transform must be 'exp' or 'identity', got {transform!r}")
    h = as_samples("sae_features", sae_features)
    logits = as_samples("probe_logits", probe_logits)
    _same_samples(fn, "sae_features", h, "probe_logits", logits)
    n, m = logits.shape[1], h.shape[1]
    if m < n:
        raise ValueError(f"{fn}: sae_features has {m} features (shape {h.shape}), fewer than "
                         f"the {n} concepts of probe_logits (shape {logits.shape}); every "
                         f"concept needs its own feature")
    if transform == "exp":
        h = np.exp(h - h.max(0))
    corr = _cross_correlation(logits, h)
    rows, cols = linear_sum_assignment(corr, maximize=True)
    per_concept = corr[rows, cols]
    return Score(per_concept.mean(), per_concept=per_concept, assignment=cols,
                 coverage=float(np.mean(per_concept >= threshold)), correlation=corr,
                 transform=transform, threshold=float(threshold))
