"""Sparse autoencoders and their trainer: the maps, the losses, and dictionary recovery.

The recovery data: 48 unit-norm random atoms in R^32 (overcomplete), every sample a positive
combination of exactly 3 of them, rescaled so that E||x||^2 = d_in (the convention under
which the L1 coefficients below mean what they mean in Anthropic's April-2024 update). The
SAEs have 64 features.
"""

import math

import pytest
import torch

from pyrocrl.diagnostics.dictionary import dictionary_recovery
from pyrocrl.inference import NonFiniteLossError
from pyrocrl.inference.sae import fit_sae, geometric_median
from pyrocrl.models.sae import (
    BatchTopKSAE,
    L1AnnealingSAE,
    SparseAutoencoder,
    StructuredSAE,
    TopKSAE,
)
from pyrocrl.simulate.dictionary import sparse_dictionary

D_IN, D_SAE, K = 8, 16, 3

BUILDERS = {
    "topk": lambda d_in=D_IN, d_sae=D_SAE: TopKSAE(d_in, d_sae, k=K),
    "batch_topk": lambda d_in=D_IN, d_sae=D_SAE: BatchTopKSAE(d_in, d_sae, k=K),
    "l1": lambda d_in=D_IN, d_sae=D_SAE: L1AnnealingSAE(d_in, d_sae, sparsity_coefficient=1.0),
    "structured": lambda d_in=D_IN, d_sae=D_SAE: StructuredSAE(
        d_in, d_sae, rank=2, low_rank_coefficient=1.0, sparsity_coefficient=1.0),
}


@pytest.fixture
def x():
    return torch.randn(32, D_IN)


# ------------------------------------------------------------------------------ shapes, API
@pytest.mark.parametrize("kind", BUILDERS)
def test_encode_decode_forward_shapes(kind, x):
    sae = BUILDERS[kind]()
    assert isinstance(sae, SparseAutoencoder)
    codes = sae.encode(x)
    assert codes.shape == (32, D_SAE)
    assert sae.decode(codes).shape == (32, D_IN)
    torch.testing.assert_close(sae(x), sae.decode(codes))
    loss, metrics = sae.loss(x, step=0)
    assert loss.ndim == 0 and loss.requires_grad
    assert {"mse", "l0"} <= set(metrics) and all(isinstance(v, float) for v in metrics.values())
    torch.testing.assert_close(torch.tensor(metrics["mse"]), (sae(x) - x).pow(2).mean())


@pytest.mark.parametrize("kind", BUILDERS)
def test_initial_decoder_rows_have_unit_norm_and_tied_encoder(kind):
    sae = BUILDERS[kind]()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.t())
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 3.0, D_SAE)[:, None])
    sae.normalize_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kind", BUILDERS)
def test_encode_rejects_wrong_shape_and_non_finite(kind):
    sae = BUILDERS[kind]()
    with pytest.raises(ValueError, match=r"x has shape \(5, 7\), expected \(N, d_in=8\)"):
        sae.encode(torch.randn(5, 7))
    with pytest.raises(ValueError, match=r"x has shape \(8,\)"):
        sae.encode(torch.randn(8))
    bad = torch.randn(5, D_IN)
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        sae.encode(bad)
    bad[2, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        sae(bad)
    with pytest.raises(TypeError, match="torch.Tensor"):
        sae.encode(bad.numpy())
    with pytest.raises(ValueError, match=r"codes has shape \(5, 3\), expected \(N, d_sae=16\)"):
        sae.decode(torch.randn(5, 3))


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
@pytest.mark.parametrize("k", [17, 0, -1, 2.5])
def test_k_outside_one_to_d_sae_is_rejected(cls, k):
    with pytest.raises(ValueError, match=r"\bk\b"):
        cls(D_IN, D_SAE, k=k)


@pytest.mark.parametrize("args, match", [
    ((0, 4), "d_in"), ((4, 0), "d_sae"), ((4.0, 4), "d_in"), ((4, True), "d_sae"),
])
def test_dimensions_must_be_positive_ints(args, match):
    with pytest.raises(ValueError, match=match):
        L1AnnealingSAE(*args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=9), "rank"), (dict(rank=0), "rank"), (dict(top_singular_values=0), "top_sing"),
    (dict(low_rank_coefficient=-1.0), "low_rank_coefficient"),
    (dict(sparsity_coefficient=float("nan")), "sparsity_coefficient"),
    (dict(sparsity_warmup_steps=-1), "sparsity_warmup_steps"),
    (dict(nuclear_norm_on="weights"), "nuclear_norm_on"),
])
def test_structured_sae_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StructuredSAE(D_IN, D_SAE, **kwargs)


# ------------------------------------------------------------------------------ TopK
def test_topk_keeps_the_k_largest_relu_preactivations(x):
    sae = TopKSAE(D_IN, D_SAE, k=K)
    codes = sae.encode(x)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    for n in range(x.shape[0]):
        order = pre[n].argsort(descending=True)
        expected = torch.zeros(D_SAE)
        top = order[:K]
        expected[top] = pre[n, top].clamp_min(0.0)
        torch.testing.assert_close(codes[n], expected)
    assert ((codes > 0).sum(1) <= K).all()


# ------------------------------------------------------------------------------ BatchTopK
def test_batch_topk_keeps_k_per_sample_on_average_in_training_mode():
    sae = BatchTopKSAE(D_IN, D_SAE, k=K)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: k * B of them are kept
    x = torch.randn(64, D_IN) * torch.linspace(0.1, 3.0, 64)[:, None]
    sae.train()
    codes = sae.encode(x)
    per_sample = (codes > 0).sum(1)
    assert per_sample.sum() == K * 64  # the batch-level budget, exactly
    assert per_sample.float().mean() == K
    assert per_sample.min() < K < per_sample.max()  # ... spread unevenly over the samples
    # the kept entries are the k * B largest of the batch
    acts = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    cutoff = acts.flatten().sort(descending=True).values[K * 64 - 1]
    torch.testing.assert_close(codes, acts * (acts >= cutoff))
    # the first batch sets the threshold to the smallest kept activation
    torch.testing.assert_close(sae.threshold, cutoff)


def test_batch_topk_threshold_is_a_moving_average_and_used_at_eval():
    sae = BatchTopKSAE(D_IN, D_SAE, k=K, threshold_decay=0.9)
    x1, x2 = torch.randn(32, D_IN), 3 * torch.randn(32, D_IN)
    sae.train()
    with torch.no_grad():
        first = sae.encode(x1)
        second = sae.encode(x2)
    smallest = [c[c > 0].min() for c in (first, second)]
    torch.testing.assert_close(sae.threshold, 0.9 * smallest[0] + 0.1 * smallest[1])
    assert int(sae.num_threshold_updates) == 2

    sae.eval()
    theta = sae.threshold.clone()
    x = torch.randn(40, D_IN)
    codes = sae.encode(x)
    acts = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    torch.testing.assert_close(codes, torch.where(acts > theta, acts, torch.zeros(())))
    # per-sample inference: a row's code does not depend on the rest of the batch
    torch.testing.assert_close(sae.encode(x[:1]), codes[:1])
    torch.testing.assert_close(sae.threshold, theta)  # eval does not move the threshold


# ------------------------------------------------------------------------------ L1 annealing
def test_sparsity_coefficient_warms_up_linearly():
    sae = L1AnnealingSAE(D_IN, D_SAE, sparsity_coefficient=2.0, sparsity_warmup_steps=400)
    assert sae.sparsity_coefficient_at(0) == pytest.approx(2.0 / 400)
    assert sae.sparsity_coefficient_at(199) == pytest.approx(1.0)
    assert sae.sparsity_coefficient_at(399) == pytest.approx(2.0)
    assert sae.sparsity_coefficient_at(10_000) == pytest.approx(2.0)
    no_warmup = L1AnnealingSAE(D_IN, D_SAE, sparsity_coefficient=2.0, sparsity_warmup_steps=0)
    assert no_warmup.sparsity_coefficient_at(0) == 2.0


def test_l1_loss_is_mse_plus_decoder_norm_weighted_l1(x):
    sae = L1AnnealingSAE(D_IN, D_SAE, sparsity_coefficient=3.0, sparsity_warmup_steps=10)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE)[:, None])
        sae.b_enc.fill_(0.2)
    loss, metrics = sae.loss(x, step=4)  # lambda_4 = 3 * 5 / 10
    codes = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    x_hat = codes @ sae.W_dec + sae.b_dec
    expected = ((x - x_hat).pow(2).sum(1) + 1.5 * (codes * sae.W_dec.norm(dim=1)).sum(1)).mean()
    torch.testing.assert_close(loss, expected / D_IN)
    assert metrics["sparsity_coefficient"] == pytest.approx(1.5)
    assert metrics["l0"] == pytest.approx((codes > 0).sum(1).float().mean().item())


def test_l1_loss_is_invariant_to_trading_scale_between_codes_and_atoms(x):
    """The reason for weighting |c_i| by ||W_dec,i||: shrinking codes and growing atoms
    cannot lower the penalty."""
    sae = L1AnnealingSAE(D_IN, D_SAE, sparsity_coefficient=3.0, sparsity_warmup_steps=0)
    loss, _ = sae.loss(x, step=0)
    scale = torch.linspace(0.2, 5.0, D_SAE)
    with torch.no_grad():
        sae.W_enc.div_(scale)
        sae.b_enc.div_(scale)
        sae.W_dec.mul_(scale[:, None])
    torch.testing.assert_close(sae.loss(x, step=0)[0], loss)


# ------------------------------------------------------------------------------ structured
def test_structured_encode_is_sparse_plus_low_rank(x):
    sae = StructuredSAE(D_IN, D_SAE, rank=2)
    torch.testing.assert_close(sae.encode(x), sae.encode_sparse(x))  # U = 0 at start
    with torch.no_grad():
        sae.U.normal_()
    centred = x - sae.b_dec
    s = torch.relu(centred @ sae.W_enc + sae.b_enc)
    h = s + centred @ (sae.U @ sae.V.t()).t()
    torch.testing.assert_close(sae.encode_sparse(x), s)
    torch.testing.assert_close(sae.encode(x), h)
    torch.testing.assert_close(sae(x), h @ sae.W_dec + sae.b_dec)
    assert torch.linalg.matrix_rank(sae.structured_encoder) == 2


@pytest.mark.parametrize("rank, top", [(3, 3), (3, 5), (5, 64)])
def test_nuclear_norm_estimate_is_exact_when_top_k_covers_the_rank(rank, top):
    sae = StructuredSAE(12, 20, rank=rank, top_singular_values=top)
    with torch.no_grad():
        sae.U.normal_()
    exact = torch.linalg.matrix_norm(sae.structured_encoder.detach(), "nuc")
    torch.testing.assert_close(sae.nuclear_norm().detach(), exact, rtol=1e-5, atol=1e-5)


def test_nuclear_norm_estimate_below_rank_is_sum_of_top_singular_values_with_exact_grad():
    """With k below the rank, eq. 92 is the sum of the top-k singular values. A matrix with
    singular values (10, 7, 1, 0.5, ...) has a gap after the second, where a randomized SVD is
    accurate, so the estimate must match torch.linalg.svd to a tight tolerance."""
    sae = StructuredSAE(12, 20, rank=6, top_singular_values=2)
    left, _ = torch.linalg.qr(torch.randn(40, 12, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    spectrum = torch.tensor([10.0, 7.0, 1.0, 0.5] + [0.1] * 8, dtype=torch.float64)
    matrix = (left * spectrum) @ right.t()
    matrix.requires_grad_(True)
    value = sae.nuclear_norm(matrix)
    u, s, vh = torch.linalg.svd(matrix.detach(), full_matrices=False)
    torch.testing.assert_close(value.detach(), s[:2].sum(), rtol=1e-6, atol=0)
    torch.testing.assert_close(s[:2].sum(), torch.tensor(17.0, dtype=torch.float64))
    value.backward()
    # d/dM sum_{j<=2} sigma_j(M) = sum_{j<=2} u_j v_j^T (distinct singular values)
    torch.testing.assert_close(matrix.grad, u[:, :2] @ vh[:2], rtol=0, atol=1e-5)


def test_structured_loss_adds_the_scaled_nuclear_norm(x):
    sae = StructuredSAE(D_IN, D_SAE, rank=2, low_rank_coefficient=0.5,
                        sparsity_coefficient=2.0, sparsity_warmup_steps=0)
    with torch.no_grad():
        sae.U.normal_()
    loss, metrics = sae.loss(x, step=0)
    s = sae.encode_sparse(x)
    mse = (sae(x) - x).pow(2).mean()
    penalty = (s * sae.W_dec.norm(dim=1)).sum(1).mean() / D_IN
    nuclear = torch.linalg.matrix_norm(sae.structured_encoder, "nuc") / D_IN
    torch.testing.assert_close(loss, mse + 2.0 * penalty + 0.5 * 2.0 * nuclear,
                               rtol=1e-5, atol=1e-6)
    assert metrics["l0"] == pytest.approx((s > 0).sum(1).float().mean().item())
    # nuclear_norm_on="codes" penalises the batch of structured codes instead
    sae.nuclear_norm_on = "codes"
    codes_loss, _ = sae.loss(x, step=0)
    low_rank = sae.encode(x) - s
    nuclear_codes = torch.linalg.matrix_norm(low_rank, "nuc") / D_IN
    torch.testing.assert_close(codes_loss, mse + 2.0 * penalty + 0.5 * 2.0 * nuclear_codes,
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ fit_sae
@pytest.fixture(scope="module")
def small_data():
    ds = sparse_dictionary(d_in=D_IN, num_atoms=12, k=2, num_samples=512, seed=3, offset=2.0)
    return ds.x


@pytest.mark.parametrize("kind", BUILDERS)
def test_fit_sae_tracks_metrics_and_mse_decreases(kind, small_data):
    sae = BUILDERS[kind]()
    result = fit_sae(sae, small_data, num_steps=200, batch_size=64, learning_rate=3e-3,
                     warmup_steps=20, log_every=50, progress=False, device="cpu")
    assert result.losses.shape == (200,) and result.device == "cpu"
    assert result.metrics["step"] == [50, 100, 150, 200]
    for key in ("mse", "l0", "dead_fraction"):
        assert len(result.metrics[key]) == 4, key
    mse = result.metrics["mse"]
    assert mse[-1] < 0.5 * mse[0], mse
    assert all(0.0 <= d <= 1.0 for d in result.metrics["dead_fraction"])
    assert not sae.training
    if sae.unit_norm_decoder:
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))


def test_fit_sae_reports_dead_features():
    sae = TopKSAE(D_IN, D_SAE, k=1)
    with torch.no_grad():
        sae.b_enc[:4] = -1e6  # these four can never fire
    result = fit_sae(sae, torch.randn(256, D_IN), num_steps=20, batch_size=64, log_every=10,
                     progress=False, device="cpu")
    assert all(d >= 4 / D_SAE for d in result.metrics["dead_fraction"])


def test_geometric_median_of_hand_worked_points():
    # 1-D: the geometric median is the ordinary median, whatever the outlier
    points = torch.tensor([[0.0], [1.0], [100.0]])
    torch.testing.assert_close(geometric_median(points, num_iters=500), torch.tensor([1.0]),
                               atol=1e-3, rtol=0)
    # four corners of a square and its centre: the centre (the mean is dragged by no one)
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.0]])
    torch.testing.assert_close(geometric_median(square), torch.tensor([1.0, 1.0]))


def test_fit_sae_initialises_decoder_bias(small_data):
    sae = TopKSAE(D_IN, D_SAE, k=K)
    fit_sae(sae, small_data, num_steps=1, learning_rate=1e-9, progress=False, device="cpu")
    torch.testing.assert_close(sae.b_dec.detach(), geometric_median(small_data), atol=1e-6,
                               rtol=0)
    fit_sae(sae, small_data, num_steps=1, learning_rate=1e-9, progress=False, device="cpu",
            init_decoder_bias="mean")
    torch.testing.assert_close(sae.b_dec.detach(), small_data.mean(0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("make_bad, error, match", [
    (lambda x: torch.cat([x, torch.full((1, D_IN), float("nan"))]), ValueError, "NaN or inf"),
    (lambda x: torch.cat([x, torch.full((1, D_IN), float("inf"))]), ValueError, "NaN or inf"),
    (lambda x: x[:, :5], ValueError, r"activations has shape \(512, 5\), expected "
                                     r"\(N, d_in=8\)"),
    (lambda x: x[0], ValueError, r"activations has shape \(8,\)"),
    (lambda x: x.long(), ValueError, "floating-point"),
    (lambda x: x.numpy(), TypeError, "torch.Tensor"),
])
def test_fit_sae_rejects_bad_activations_before_training(make_bad, error, match, small_data):
    sae = TopKSAE(D_IN, D_SAE, k=K)
    before = {name: p.detach().clone() for name, p in sae.named_parameters()}
    with pytest.raises(error, match=match):
        fit_sae(sae, make_bad(small_data), num_steps=5, progress=False, device="cpu")
    for name, p in sae.named_parameters():  # not even b_dec was initialised
        assert torch.equal(p, before[name]), name


def test_fit_sae_rejects_bad_arguments(small_data):
    with pytest.raises(TypeError, match="SparseAutoencoder"):
        fit_sae(torch.nn.Linear(8, 8), small_data)
    with pytest.raises(ValueError, match="num_steps"):
        fit_sae(TopKSAE(D_IN, D_SAE, k=K), small_data, num_steps=0)
    with pytest.raises(ValueError, match="init_decoder_bias"):
        fit_sae(TopKSAE(D_IN, D_SAE, k=K), small_data, init_decoder_bias="median")


def test_non_finite_loss_raises_and_keeps_the_last_good_parameters(small_data, monkeypatch):
    sae = L1AnnealingSAE(D_IN, D_SAE)
    original = sae.loss_terms
    snapshot = {}

    def poisoned(x, step):
        loss, metrics, codes = original(x, step)
        if step == 3:
            snapshot.update({n: p.detach().clone() for n, p in sae.named_parameters()})
            return loss * float("nan"), metrics, codes
        return loss, metrics, codes

    monkeypatch.setattr(sae, "loss_terms", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        fit_sae(sae, small_data, num_steps=10, batch_size=64, progress=False, device="cpu")
    for name, p in sae.named_parameters():
        assert torch.equal(p, snapshot[name]), name


# ------------------------------------------------------------------------------ recovery
# Fraction of the 48 atoms each SAE recovers (|cos| >= 0.9, one-to-one matching gives the
# same) with these settings, seeds 0 / 1 / 2, 2-core CPU: TopK 1.00 / 1.00 / 1.00 (mean best
# |cos| 0.999), BatchTopK 0.96 / 0.96 / 1.00 (0.98), L1-annealing 1.00 / 1.00 / 1.00 (0.995),
# structured 1.00 / 1.00 / 1.00 (0.995); 1.5-5 s each. The L1 penalties leave ~5 small
# spurious codes per sample where the TopK variants have exactly 3.
#
# On these purely sparse data the structured SAE needs low_rank_coefficient ~3 (with
# sparsity_coefficient 1): the nuclear penalty then switches its low-rank encoder off and it
# becomes the L1-annealing SAE. With alpha = 1 a spurious rank-2..4 dense map survives and
# takes variance from the atoms: 0.81-0.85 recovered (rank 2), 0.35 (rank 4). Where the data
# do have a dense low-rank part, alpha = 1 is the better choice (see the test after next).
RECOVERY = {
    "topk": (lambda: TopKSAE(32, 64, k=3), 1500),
    "batch_topk": (lambda: BatchTopKSAE(32, 64, k=3), 1500),
    "l1": (lambda: L1AnnealingSAE(32, 64, sparsity_coefficient=1.0), 2000),
    "structured": (lambda: StructuredSAE(32, 64, rank=4, low_rank_coefficient=3.0,
                                         sparsity_coefficient=1.0), 2000),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: a second intra-op thread only adds contention on a busy 2-core box
    (it made these fits ~100x slower there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unit_energy_data(seed, **kwargs):
    ds = sparse_dictionary(d_in=32, num_atoms=48, k=3, num_samples=4096, seed=seed, **kwargs)
    return ds, ds.x * math.sqrt(32 / ds.x.pow(2).sum(1).mean())  # E||x||^2 = d_in


def train(make, x, seed, num_steps):
    # the SAE's random init must not share the simulator's seed: both draw torch.randn
    # first, so the same seed would plant the true atoms in W_dec
    torch.manual_seed(1000 + seed)
    sae = make()
    result = fit_sae(sae, x, num_steps=num_steps, batch_size=256, learning_rate=3e-3,
                     seed=seed, progress=False, device="cpu")
    return sae, result


@pytest.mark.parametrize("kind", RECOVERY)
def test_sae_recovers_the_true_dictionary(kind):
    ds, x = unit_energy_data(seed=0)
    make, num_steps = RECOVERY[kind]
    torch.manual_seed(1000)
    untrained = dictionary_recovery(ds.info["atoms"], make().W_dec)
    assert float(untrained) == 0.0  # random unit vectors in R^32 are never 0.9-aligned
    sae, result = train(make, x, seed=0, num_steps=num_steps)
    score = dictionary_recovery(ds.info["atoms"], sae.W_dec)
    assert float(score) >= 0.9, score.per_atom
    assert score.matched_fraction >= 0.9  # ... and by distinct features
    assert result.metrics["mse"][-1] < 0.15 * result.metrics["mse"][0]
    with torch.no_grad():
        sparse = sae.encode_sparse(x) if kind == "structured" else sae.encode(x)
    l0 = (sparse > 0).sum(1).float().mean()
    if kind in ("topk", "batch_topk"):  # batch_topk: eval mode, the learned threshold
        assert abs(l0 - 3) < 0.25, l0
    if kind == "structured":  # no dense structure in these data: the low-rank part is off
        norm = torch.linalg.matrix_norm(sae.structured_encoder.detach(), "nuc")
        assert norm < 0.05, norm


@pytest.mark.slow
@pytest.mark.parametrize("kind", RECOVERY)
@pytest.mark.parametrize("seed", [1, 2])
def test_sae_recovers_the_true_dictionary_across_seeds(kind, seed):
    ds, x = unit_energy_data(seed)
    make, num_steps = RECOVERY[kind]
    sae, _ = train(make, x, seed, num_steps)
    score = dictionary_recovery(ds.info["atoms"], sae.W_dec)
    assert float(score) >= 0.9 and score.matched_fraction >= 0.9, score.per_atom


def principal_cosines(basis, matrix):
    """Cosines of the principal angles between the row spaces of basis (orthonormal rows)
    and matrix."""
    q = torch.linalg.qr(matrix.t())[0]
    return torch.linalg.svdvals(basis @ q)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow),
                                  pytest.param(2, marks=pytest.mark.slow)])
def test_structured_sae_puts_a_dense_low_rank_component_in_its_low_rank_encoder(seed):
    """Sparse atoms plus a rank-2 dense Gaussian component. Measured (seeds 0 / 1 / 2): both
    SAEs recover 1.00 / 0.98 / 1.00 of the atoms, but the structured SAE's low-rank encoder
    finds the dense plane (principal cosines >= 0.99 on both sides), so its sparse codes need
    L0 ~4.5 instead of ~7 and its MSE is ~20% lower."""
    ds, x = unit_energy_data(seed, dense_rank=2, dense_scale=1.0)
    structured, _ = train(lambda: StructuredSAE(32, 64, rank=2, low_rank_coefficient=1.0,
                                                sparsity_coefficient=1.0), x, seed, 2000)
    plain, _ = train(lambda: L1AnnealingSAE(32, 64, sparsity_coefficient=1.0), x, seed, 2000)
    dense = ds.info["dense_basis"]
    with torch.no_grad():
        # the plane the low-rank part reads from (V) and writes to (U^T W_dec)
        assert principal_cosines(dense, structured.V.t()).min() >= 0.95
        assert principal_cosines(dense, structured.U.t() @ structured.W_dec).min() >= 0.95
        l0 = {name: (sae.encode_sparse(x) if name == "structured" else sae.encode(x))
              .gt(0).sum(1).float().mean().item()
              for name, sae in (("structured", structured), ("plain", plain))}
        mse = {name: (sae(x) - x).pow(2).mean().item()
               for name, sae in (("structured", structured), ("plain", plain))}
    assert l0["structured"] <= l0["plain"] - 1.5, l0
    assert mse["structured"] < mse["plain"], mse
    for sae in (structured, plain):
        assert float(dictionary_recovery(ds.info["atoms"], sae.W_dec)) >= 0.9
