"""K copies of a module trained side by side as one vectorized module.

Small models on a CPU spend most of a training step in Python and dispatch overhead, so K
independent fits cost far less together than one after another. :class:`SideBySide` stacks the
parameters and buffers of K modules of the same architecture (``torch.func.stack_module_state``:
every tensor gets a leading dimension of size K) and evaluates the first module's code on each
copy with ``torch.func.vmap`` over ``torch.func.functional_call``. Minimizing the *sum* of the
K losses moves each copy exactly as if it were trained alone on the same minibatches (the
copies share no parameter; Adam's update is element-wise), which the tests check.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pyro
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class SideBySide(nn.Module):
    """K modules of one architecture as one module with stacked parameters.

    ``forward(*args)`` returns what each copy's ``forward(*args)`` returns, stacked along a new
    leading dimension of size K (the arguments are shared); :meth:`each` gives copy ``k`` its
    own arguments ``a[k]``. With K > 1, Pyro's distribution argument validation is off while
    the copies run, as its checks are data-dependent branches that ``vmap`` cannot trace.
    :meth:`copy_state` returns one copy's state dict, to load it back into a module of the
    original architecture.

    Args:
        modules: the K modules (at least one), with the same parameter and buffer names
            and shapes; their current values are copied (later changes to them do not reach
            this module, and a submodule the K modules share gets K independent copies).
    """

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        modules = list(modules)
        if not modules:
            raise ValueError("SideBySide: needs at least one module")
        layouts = [[(name, tuple(t.shape)) for name, t in (*m.named_parameters(),
                                                          *m.named_buffers())]
                   for m in modules]
        if any(layout != layouts[0] for layout in layouts):
            raise ValueError("SideBySide: the modules must have the same parameter and buffer "
                             "names and shapes")
        self.num_copies = len(modules)
        if self.num_copies == 1:  # nothing to vectorize: a copy of the module itself
            self.single = copy.deepcopy(modules[0])
            return
        params, buffers = stack_module_state(modules)
        self._param_names, self._buffer_names = list(params), list(buffers)
        # flat names: a registered name cannot contain dots
        self.stacked = nn.ParameterList(nn.Parameter(p.detach().clone()) for p in params.values())
        for i, b in enumerate(buffers.values()):
            self.register_buffer(f"stacked_buffer_{i}", b.detach().clone())
        self._template = (copy.deepcopy(modules[0]),)  # a tuple: not a registered submodule

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        params = dict(zip(self._param_names, self.stacked))
        buffers = {name: getattr(self, f"stacked_buffer_{i}")
                   for i, name in enumerate(self._buffer_names)}
        return params, buffers

    def forward(self, *args):
        """Every copy on the same ``args``; outputs stacked along a leading dimension K."""
        return self._run(args, split=False)

    def each(self, *args):
        """Copy ``k`` on ``[a[k] for a in args]`` (every argument has a leading dimension K),
        e.g. each copy on its own minibatch; outputs stacked along a leading dimension K."""
        for i, a in enumerate(args):
            if a.shape[:1] != (self.num_copies,):
                raise ValueError(f"SideBySide.each: argument {i} must have a leading dimension "
                                 f"of num_copies={self.num_copies}, got shape {tuple(a.shape)}")
        return self._run(args, split=True)

    def _run(self, args, split: bool):
        if self.num_copies == 1:
            inputs = [a[0] for a in args] if split else args
            return _unsqueeze(self.single(*inputs))
        template = self._template[0]
        template.to(next(iter(self.stacked)).device)

        def one(params, buffers, *inputs):
            return functional_call(template, (params, buffers), inputs)

        in_dims = (0, 0) + ((0 if split else None),) * len(args)
        with pyro.validation_enabled(False):
            return vmap(one, in_dims=in_dims)(*self._state(), *args)

    def named_copy_parameters(self):
        """``(name, parameter)`` pairs by the original modules' parameter names: with K > 1
        each parameter is the stacked one (leading dimension K), with K = 1 the single
        copy's own. E.g. to freeze one submodule in every copy."""
        if self.num_copies == 1:
            return list(self.single.named_parameters())
        return list(zip(self._param_names, self.stacked))

    @torch.no_grad()
    def copy_state(self, index: int) -> dict[str, torch.Tensor]:
        """The state (parameters and buffers, by their original names) of copy ``index``."""
        if not 0 <= index < self.num_copies:
            raise IndexError(f"SideBySide.copy_state: index must lie in [0, "
                             f"{self.num_copies}), got {index}")
        if self.num_copies == 1:
            return {name: t.detach().clone() for name, t in
                    (*self.single.named_parameters(), *self.single.named_buffers())}
        params, buffers = self._state()
        return {name: t[index].clone() for name, t in {**params, **buffers}.items()}


def _unsqueeze(out):
    """``out`` (a tensor or nested tuples/lists of them) with a leading dimension of 1."""
    if isinstance(out, torch.Tensor):
        return out.unsqueeze(0)
    return type(out)(_unsqueeze(o) for o in out)


def keep_copies(tensor: torch.Tensor, alive: torch.Tensor, other) -> torch.Tensor:
    """``tensor`` (leading dimension K copies) where ``alive`` ``(K,)`` is true, ``other``
    (broadcast) elsewhere: e.g. a diverged copy's gradient slice set to zero. A select, so a
    NaN in a dropped slice does not spread."""
    keep = alive.to(tensor.device).view(-1, *(1,) * (tensor.ndim - 1))
    return torch.where(keep, tensor, other)
