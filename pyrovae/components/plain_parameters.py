"""Running a program with its parameters as plain tensors, without ``pyro.param`` sites.

Inside a ``pyro_method``, every parameter a ``PyroModule`` touches becomes a ``pyro.param``
statement (``pyro.module`` for a plain ``nn.Module`` child: one per tensor). That is what lets
``pyro.infer.SVI`` find and train a program's parameters, and it costs one trip through Pyro's
effect stack per tensor per call: about 0.8 ms of a 6 ms step of the two-layer VAE.

pyrovae's own training loop hands ``program.parameters()`` to its optimizer directly and reads
no param site, so it runs each step under :func:`plain_parameters`, where the program's modules
see an inactive Pyro context: a parameter is returned as the tensor it is (a ``PyroParam`` as its
constrained value), exactly what the param site would have returned, so the loss and gradients
are the same. Sample sites, plates and every other effect are untouched. A program whose modules
declare ``PyroSample`` attributes needs the active context to make their sample sites, so it runs
as it is.
"""

from __future__ import annotations

from pyro.nn.module import PyroModule, _Context
from torch import nn

__all__ = ["plain_parameters"]


class _InactiveContext(_Context):
    """A ``PyroModule`` context that never becomes active: attribute access makes no site."""

    def __init__(self) -> None:
        super().__init__()
        self.used = True

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        pass


class plain_parameters:  # noqa: N801  (used as a context manager, like a function)
    """Within ``with plain_parameters(program):``, ``program``'s Pyro modules use their parameters
    without ``pyro.param`` sites. Reusable: build it once, enter it every step."""

    def __init__(self, program: nn.Module) -> None:
        self.modules = [m for m in program.modules() if isinstance(m, PyroModule)]
        #: False for a program with ``PyroSample`` attributes, which then runs as it is.
        self.enabled = not any(m.__dict__.get("_pyro_samples") for m in self.modules)
        self._saved: list[list[_Context]] = []

    def __enter__(self) -> None:
        if self.enabled:
            self._saved.append([m.__dict__["_pyro_context"] for m in self.modules])
            inactive = _InactiveContext()
            for module in self.modules:
                module.__dict__["_pyro_context"] = inactive

    def __exit__(self, *exc_info: object) -> None:
        if self.enabled:
            for module, context in zip(self.modules, self._saved.pop(), strict=True):
                module.__dict__["_pyro_context"] = context
