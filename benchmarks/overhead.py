"""B12: the cost of Pyro. ``fit_svi``'s step time vs a hand-written pure-PyTorch loss of the
same ELBO, for IVAE and TemporalVAE, measured in one process, interleaved, on the same data
and modules.

The pure-PyTorch step samples z ~ q(z | x, u) by reparameterization and computes
log p(x | z) + log p(z | u) - log q(z | x, u) with torch.distributions (TemporalVAE: its
``TransitionPrior`` density), scaled to the full data set like the plate does; both use
torch.optim.Adam on the same parameters. The ratio is the
median over interleaved rounds of (fit_svi seconds per step) / (pure-PyTorch seconds per
step), after two warm-up rounds. ``fit_svi(jit=True)`` (the loss traced once with
``JitTrace_ELBO``) is measured in the same rounds; its one-time tracing cost, outside the
step times, is reported as ``jit_setup_s``.
Target: <= 1.25x.

    python benchmarks/overhead.py
    python benchmarks/overhead.py --quick
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pyro
import torch
from _common import benchmark_parser, write
from torch.distributions import Normal

from pyrocrl import simulate
from pyrocrl.inference import fit_svi
from pyrocrl.models import IVAE, TemporalVAE


def elbo_terms(model, xb, ub):
    """``log p(x | z) + log p(z | u) - log q(z | x, u)`` per data point, hand-written."""
    loc, scale = model.posterior(xb, ub)
    z = loc + scale * torch.randn_like(loc)
    event = tuple(range(1, xb.ndim))
    log_lik = Normal(model.decoder(z), model.obs_scale).log_prob(xb).sum(event)
    if isinstance(model, IVAE):
        log_prior = Normal(model.prior_loc[ub], model.prior_scale[ub]).log_prob(z).sum(-1)
    else:
        log_prior = model.prior(ub, xb.shape[1]).log_prob(z)
    log_q = Normal(loc, scale).log_prob(z).sum(event)
    return log_lik + log_prior - log_q


def torch_steps(model, x, u, num_steps: int, batch_size: int) -> float:
    """Seconds per step of the hand-written ELBO with Adam (no Pyro involved)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    num_data = x.shape[0]
    start = time.perf_counter()
    for _ in range(num_steps):
        index = torch.randint(0, num_data, (batch_size,))
        loss = -(num_data / batch_size) * elbo_terms(model, x[index], u[index]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / num_steps


def pyro_steps(model, x, u, num_steps: int, batch_size: int, jit: bool = False):
    """Seconds per step of ``fit_svi`` and the seconds spent before its first step."""
    start = time.perf_counter()
    result = fit_svi(model, x, u, num_steps=num_steps, batch_size=batch_size, progress=False,
                     device="cpu", jit=jit)
    return result.time_s / num_steps, time.perf_counter() - start - result.time_s


def setups():
    """``(name, model, x, u, batch_size)`` for each measured model."""
    iid = simulate.nonstationary_sources(num_latents=5, num_domains=40, samples_per_domain=1000,
                                         seed=0)
    seq = simulate.nonstationary_temporal(num_latents=4, lag=2, num_domains=5, obs_dim=8,
                                          num_sequences=1000, seq_len=10, setting="change",
                                          seed=0)
    pyro.set_rng_seed(0)
    return [("IVAE(5, 5, 40), hidden 64 x 3 layers", IVAE(5, 5, 40), iid.x, iid.u, 256),
            ("TemporalVAE(8, 4, lag=2, num_domains=5), T = 10", TemporalVAE(8, 4, 2, 5), seq.x,
             seq.u, 64)]


def measure(model, x, u, batch_size, rounds, steps) -> dict:
    timings = {"torch": [], "fit_svi": [], "fit_svi_jit": []}
    setup = {"fit_svi": [], "fit_svi_jit": []}

    def one_round():
        yield "torch", torch_steps(model, x, u, steps, batch_size), None
        for name, jit in (("fit_svi", False), ("fit_svi_jit", True)):
            yield name, *pyro_steps(model, x, u, steps, batch_size, jit)

    for _ in range(2):  # warm-up: allocator, thread pools, CPU frequency
        list(one_round())
    for _ in range(rounds):
        for name, seconds, before in one_round():
            timings[name].append(seconds)
            if before is not None:
                setup[name].append(before)
    out = {"batch_size": batch_size,
           "ms_per_step": {k: float(np.median(v) * 1e3) for k, v in timings.items()},
           "jit_setup_s": float(np.median(setup["fit_svi_jit"]) - np.median(setup["fit_svi"]))}
    for name in ("fit_svi", "fit_svi_jit"):
        ratios = np.array(timings[name]) / np.array(timings["torch"])
        suffix = "" if name == "fit_svi" else "_jit"
        out["ratio_to_torch" + suffix] = float(np.median(ratios))
        out["ratio_interquartile" + suffix] = [float(q) for q in np.percentile(ratios, [25, 75])]
    out["timings_s_per_step"] = timings
    return out


def main(argv=None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    rounds, steps = (2, 20) if args.quick else (args.rounds, args.steps)

    results = {}
    for name, model, x, u, batch_size in setups():
        results[name] = measure(model, x, u, batch_size, rounds, steps)
        r = results[name]
        low, high = r["ratio_interquartile"]
        print(f"{name}: ms/step " + ", ".join(f"{k} {v:.2f}" for k, v in r["ms_per_step"]
                                              .items())
              + f"; fit_svi / pure torch = {r['ratio_to_torch']:.2f}x (interquartile "
                f"{low:.2f}-{high:.2f}), jit=True {r['ratio_to_torch_jit']:.2f}x (tracing "
                f"{r['jit_setup_s']:.1f} s once); {rounds} interleaved rounds", flush=True)
    payload = {"setting": {"steps_per_round": steps, "rounds": rounds}, "models": results,
               "target_ratio": 1.25}
    write("overhead" if not args.quick else "overhead_quick", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
