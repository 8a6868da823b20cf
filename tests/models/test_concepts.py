import itertools
import math

import numpy as np
import pytest
import torch

from pyrocrl.inference import fit_svi
from pyrocrl.inference.next_token import fit_next_token
from pyrocrl.models.concepts import DiscreteConceptModel, NextTokenPredictor, random_mask
from pyrocrl.simulate.concepts import discrete_concepts


def brute_force_log_joint(ds, x, observed):
    """log p(c, x_observed) by looping over configurations with the generator's own tables
    (an independent re-derivation of the model's density, in float64)."""
    info = ds.info
    n = len(info["cpds"])
    flip = info["flip_prob"]
    out = np.zeros((x.shape[0], 2**n))
    for c, z in enumerate(itertools.product([0, 1], repeat=n)):  # concept 0 = leading bit
        log_prior = 0.0
        for i in range(n):
            q = float(info["cpds"][i][tuple(z[p] for p in info["parents"][i])])
            log_prior += math.log(q if z[i] else 1 - q)
        agree = x == info["observation_map"][c]
        per_bit = np.where(agree, math.log(1 - flip), math.log(flip)) * observed
        out[:, c] = log_prior + per_bit.sum(1)
    return out


@pytest.mark.parametrize("graph", ["chain", "er2"])
def test_exact_posterior_and_likelihood_match_brute_force(graph):
    ds = discrete_concepts(4, graph, num_observed=7, num_samples=64, seed=1, flip_prob=0.1)
    model = DiscreteConceptModel.from_dataset(ds).double()
    x = ds.x.double()
    observed = 1.0 - random_mask(64, 7, num_masked=2, generator=torch.Generator().manual_seed(0))
    for obs in (None, observed.double()):
        ref = brute_force_log_joint(ds, x.numpy(), np.ones((64, 7)) if obs is None
                                    else obs.numpy())
        ref_post = ref - np.logaddexp.reduce(ref, axis=1, keepdims=True)
        np.testing.assert_allclose(model.log_posterior(x, obs).numpy(), ref_post, atol=1e-6)
        np.testing.assert_allclose(model.log_likelihood(x, obs).numpy(),
                                   np.logaddexp.reduce(ref, axis=1), atol=1e-6)


def test_concept_posterior_is_the_marginal_of_the_joint_posterior():
    ds = discrete_concepts(3, "chain", num_observed=3, num_samples=200, seed=0, flip_prob=0.05)
    model = DiscreteConceptModel.from_dataset(ds)
    joint = model.log_posterior(ds.x).exp()
    bits = torch.tensor(list(itertools.product([0, 1], repeat=3)), dtype=torch.float32)
    np.testing.assert_allclose(model.encode(ds.x).numpy(), (joint @ bits).numpy(), atol=1e-6)
    # the Bayes decision beats guessing the majority class
    accuracy = ((model.encode(ds.x) > 0.5).float() == ds.z).float().mean().item()
    assert accuracy > 0.75


def test_fitted_by_traceenum_elbo_reaches_the_true_likelihood():
    ds = discrete_concepts(3, "chain", num_observed=8, num_samples=6000, seed=2, flip_prob=0.05)
    train, test = ds.split(0.8, seed=0)
    truth = DiscreteConceptModel.from_dataset(ds).log_likelihood(test.x).mean().item()
    model = DiscreteConceptModel(3, 8)  # complete DAG, random init
    start = model.log_likelihood(test.x).mean().item()
    result = fit_svi(model, train.x, num_steps=1500, batch_size=512, learning_rate=0.05,
                     elbo="traceenum", progress=False)
    fitted = model.log_likelihood(test.x).mean().item()
    assert np.isfinite(result.losses).all()
    # exact marginal likelihood: the ELBO with an empty guide is log p(x)
    assert abs(result.losses[-100:].mean() + model.log_likelihood(train.x).mean().item()) < 0.05
    assert start < truth - 1.0 and fitted > truth - 0.03, (start, fitted, truth)


def test_model_bad_input():
    model = DiscreteConceptModel(3, 5)
    with pytest.raises(ValueError, match="binary"):
        model.log_posterior(torch.full((4, 5), 0.5))
    with pytest.raises(ValueError, match=r"num_observed=5"):
        model.log_posterior(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="observed"):
        model.log_posterior(torch.zeros(4, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="DAG"):
        DiscreteConceptModel(2, 5, graph=np.ones((2, 2)) - np.eye(2))
    with pytest.raises(ValueError, match="from_dataset"):
        from pyrocrl.simulate import nonstationary_sources
        DiscreteConceptModel.from_dataset(nonstationary_sources(2, 5, 10, 2, 1, seed=0))


def test_random_mask_masks_exactly_k():
    mask = random_mask(100, 6, num_masked=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask.sum(1), torch.full((100,), 2.0))
    with pytest.raises(ValueError, match="num_masked"):
        random_mask(10, 3, num_masked=3)


def test_next_token_predictor_shapes_and_errors():
    net = NextTokenPredictor(6, hidden=32)
    x = torch.bernoulli(torch.full((10, 6), 0.5))
    assert net(x, random_mask(10, 6)).shape == (10, 6)
    assert net.features(x).shape == (10, 32)
    with pytest.raises(ValueError, match="binary"):
        net.features(x + 0.5)
    with pytest.raises(ValueError, match="num_observed=6"):
        net.features(torch.zeros(10, 5))
    with pytest.raises(ValueError, match="num_masked"):
        fit_next_token(net, x, num_steps=1, num_masked=6, progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        fit_next_token(net, x, num_steps=0, progress=False)


def test_fit_next_token_learns_the_conditional():
    ds = discrete_concepts(3, "chain", num_observed=6, num_samples=3000, seed=0)
    net = NextTokenPredictor(6, hidden=64)
    result = fit_next_token(net, ds.x, num_steps=300, batch_size=128, progress=False,
                            log_every=50)
    assert result.metrics["step"][-1] == 300
    assert result.metrics["accuracy"][-1] > result.metrics["accuracy"][0]
    assert result.losses[-50:].mean() < result.losses[:50].mean() - 0.1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_probes_read_the_concepts_from_next_token_features(seed):
    """Seed 004, Corollary 4.3 in a small invertible setting: held-out linear probes on the
    features recover every concept (>= 0.9), and the features are close to an affine map of
    the exact log-posterior (Theorem 3.1)."""
    from pyrocrl.diagnostics import posterior_linearity, probe_accuracy

    ds = discrete_concepts(3, "chain", num_observed=12, num_samples=6000, seed=seed,
                           flip_prob=0.05)
    train, test = ds.split(0.5, seed=seed)
    net = NextTokenPredictor(12)
    fit_next_token(net, train.x, num_steps=1500, seed=seed, progress=False)
    features = net.features(test.x)
    accuracy = probe_accuracy(features, test.z)
    assert min(accuracy.per_concept) >= 0.9, accuracy
    log_post = DiscreteConceptModel.from_dataset(ds).log_posterior(test.x)
    assert posterior_linearity(features, log_post, alpha=1e-3) >= 0.9
