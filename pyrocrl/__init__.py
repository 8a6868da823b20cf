"""pyrocrl: causal representation learning on Pyro.

Generative processes with latent causal variables are written as Pyro programs
(:mod:`pyrocrl.simulate`), learned with neural guides (:mod:`pyrocrl.models`,
:mod:`pyrocrl.inference`), and checked for identifiability
(:mod:`pyrocrl.diagnostics`): is the learned latent the true one, up to the
ambiguity that theory says cannot be removed?
"""

__version__ = "0.1.0"

from pyrocrl import diagnostics, distributions, inference, models, nn, simulate  # noqa: E402

__all__ = [
    "__version__", "diagnostics", "distributions", "inference", "models", "nn", "simulate",
]
