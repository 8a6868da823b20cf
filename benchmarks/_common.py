"""Shared by the benchmark scripts: the machine description and result writing."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark script has; ``doc``'s first paragraph describes it."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long run (the tests')")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results)")
    return parser


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    import pyro

    info["pyro"] = pyro.__version__
    return info


def mean_std(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
            else 0.0, "values": values.tolist()}


def write(name: str, payload: dict, out: Path | None = None) -> Path:
    out = Path(out) if out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(),
               "date": time.strftime("%Y-%m-%d"), **payload}
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def save_figure(fig, path: Path) -> None:
    """Save ``fig`` beside the JSON result ``path`` (same name, ``.png``) and say where."""
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    print(f"wrote {path.with_suffix('.png')}")
