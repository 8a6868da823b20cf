"""B13: training throughput on the CPU and, when one is present, on a GPU, side by side.

Three workloads, each trained by the package's own loop for a fixed number of steps after a
warm-up run on the same device, at a small and a large batch:

* ``temporal_vae``: TemporalVAE(8, 4, lag 2, 5 domains) on sequences of T = 10 (B4's CPU size)
  by ``fit_svi`` (eager and ``jit=True``): **sequences/s**;
* ``ivae``: IVAE(5, 5, 40) on B1's data by ``fit_svi`` (eager and ``jit=True``): **samples/s**;
* ``topk_sae``: TopKSAE(64 -> 512, k = 8) on a sparse dictionary by ``fit_sae``: **tokens/s**
  (activation vectors per second).

A rate is ``batch_size * steps / FitResult.time_s`` (the step loop only: data generation,
model construction and tracing are outside), the median of ``--repeats`` runs. The device
names come with the numbers (``machine`` in the JSON). Without CUDA the GPU column is absent
and the README says so.

    python benchmarks/throughput.py
    python benchmarks/throughput.py --quick
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pyro
import torch
from _common import benchmark_parser, write

from pyrocrl import simulate
from pyrocrl.inference import fit_sae, fit_svi
from pyrocrl.models import IVAE, TemporalVAE, TopKSAE

FULL = dict(steps=200, repeats=3, num_sequences=8192, samples_per_domain=1000,
            num_tokens=65536, batches={"temporal_vae": [64, 1024], "ivae": [256, 4096],
                                       "topk_sae": [1024, 8192]})
QUICK = dict(steps=5, repeats=1, num_sequences=256, samples_per_domain=20, num_tokens=2048,
             batches={"temporal_vae": [32], "ivae": [64], "topk_sae": [256]})


def workloads(size):
    """``name -> (unit, data, make_model, train, jits)``: ``train(model, data, batch, steps,
    device, jit)`` runs the package's loop and returns its FitResult; ``jits`` are the
    ``jit`` settings measured (the SAE loop is plain torch: eager only)."""
    seq = simulate.nonstationary_temporal(num_latents=4, lag=2, num_domains=5, obs_dim=8,
                                          num_sequences=size["num_sequences"], seq_len=10,
                                          setting="change", seed=0)
    iid = simulate.nonstationary_sources(num_latents=5, num_domains=40,
                                         samples_per_domain=size["samples_per_domain"], seed=0)
    acts = simulate.sparse_dictionary(d_in=64, num_atoms=512, k=8,
                                      num_samples=size["num_tokens"], seed=0)

    def svi(model, data, batch, steps, device, jit):
        return fit_svi(model, *data, num_steps=steps, batch_size=batch, progress=False,
                       device=device, jit=jit)

    def sae(model, data, batch, steps, device, jit):
        return fit_sae(model, data[0], num_steps=steps, batch_size=batch, progress=False,
                       device=device, warmup_steps=0)

    return {
        "temporal_vae": ("sequences/s", (seq.x, seq.u), lambda: TemporalVAE(8, 4, 2, 5), svi,
                         (False, True)),
        "ivae": ("samples/s", (iid.x, iid.u), lambda: IVAE(5, 5, 40), svi, (False, True)),
        "topk_sae": ("tokens/s", (acts.x,), lambda: TopKSAE(64, 512, 8), sae, (False,)),
    }


def measure(train, make_model, data, batch, steps, repeats, device, jit) -> dict:
    rates = []
    for r in range(repeats + 1):  # the first run warms the device up and is not counted
        pyro.clear_param_store()
        pyro.set_rng_seed(r)
        result = train(make_model(), data, batch, steps, device, jit)
        if r:
            rates.append(batch * steps / result.time_s)
    return {"rate": float(np.median(rates)), "rates": rates, "device": result.device}


def main(argv=None):
    parser = benchmark_parser(__doc__)
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    rows = []
    for name, (unit, data, make_model, train, jits) in workloads(size).items():
        for batch in size["batches"][name]:
            for jit in jits:
                row = {"workload": name, "unit": unit, "batch_size": batch, "jit": jit}
                for device in devices:
                    m = measure(train, make_model, data, batch, size["steps"], size["repeats"],
                                device, jit)
                    row[device] = m
                rows.append(row)
                print(f"{name:<13} batch {batch:>5} jit={str(jit):<5} " + ", ".join(
                    f"{device} {row[device]['rate']:,.0f} {unit}" for device in devices)
                      + (f" (GPU/CPU {row['cuda']['rate'] / row['cpu']['rate']:.1f}x)"
                         if "cuda" in row else ""), flush=True)
    write("throughput_quick" if args.quick else "throughput", {
        "setting": {**size, "devices": devices, "torch_threads_cpu": torch.get_num_threads(),
                    "note": "rate = batch_size * steps / time of the step loop; median of "
                            "repeats after one warm-up run"},
        "runs": rows}, args.out)
    return rows


if __name__ == "__main__":
    main()
