"""The training loop's plain-parameters path: the same loss and gradients as the program run with
its ``pyro.param`` sites, no param site inside it, and everything restored after it."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import tiny
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.nn import PyroModule, PyroSample, pyro_method

import pyrovae
from pyrovae.components.plain_parameters import plain_parameters
from pyrovae.registry import builtin

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return pyrovae.load_splits(tiny().data, CPU)


def build(splits, kind: str, name: str):
    overrides = {"prior": f"model.prior={name}", "program": f"model.program={name}"}[kind]
    extra = {
        "two_layer": ["model.program.latent1=4", "model.program.latent2=2"],
        "m2": ["model.program.latent=4"],
    }.get(name, [])
    config = (
        pyrovae.load_config(None, [overrides, *extra]) if extra else tiny(overrides)
    )  # two_layer and m2 read none of tiny's model keys
    return pyrovae.build_program(config.model, splits.x_shape, num_classes=splits.num_classes)


def loss_and_grads(program, x, y, plain: bool) -> tuple[float, dict[str, torch.Tensor]]:
    elbo = TraceEnum_ELBO(max_plate_nesting=1) if program.enumerates else Trace_ELBO()
    args = (x,) if y is None else (x, y)
    program.zero_grad()
    pyro.set_rng_seed(3)
    if plain:
        with plain_parameters(program):
            loss = elbo.differentiable_loss(program.model, program.guide, *args)
    else:
        loss = elbo.differentiable_loss(program.model, program.guide, *args)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in program.named_parameters() if p.grad is not None}
    return loss.item(), grads


CASES = [("prior", name) for name in builtin("prior")] + [
    ("program", name) for name in builtin("program")
]


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_same_loss_and_gradients_without_param_sites(kind, name, splits):
    program = build(splits, kind, name)
    x = torch.bernoulli(splits.valid[:20], generator=torch.Generator().manual_seed(0))
    # m2 sums its label out (TraceEnum_ELBO); cvae needs the labels
    y = splits.valid_labels[:20] if getattr(program, "labels_required", False) else None
    sited_loss, sited = loss_and_grads(program, x, y, plain=False)
    plain_loss, plain = loss_and_grads(program, x, y, plain=True)
    assert plain_loss == sited_loss  # the same tensors, the same operations: bit for bit
    assert sited.keys() == plain.keys() and sited  # every parameter still gets its gradient
    for key, grad in sited.items():
        assert torch.equal(plain[key], grad), key


def test_no_param_site_inside_and_sites_again_after(splits):
    program = build(splits, "prior", "learned_normal")
    x = splits.valid[:5]

    def params(trace) -> list[str]:
        return [n for n, s in trace.nodes.items() if s["type"] == "param"]

    before = poutine.trace(program.guide).get_trace(x)
    with plain_parameters(program):
        inside = poutine.trace(program.model).get_trace(x)
        assert not params(inside)
        assert "z" in inside.nodes  # sample sites and plates are untouched
    after = poutine.trace(program.model).get_trace(x)
    assert params(before) and params(after)  # an SVI loop after it finds the parameters


def test_contexts_restored_after_an_error(splits):
    program = build(splits, "program", "vae")
    contexts = [m._pyro_context for m in program.modules() if isinstance(m, PyroModule)]
    plain = plain_parameters(program)
    with pytest.raises(RuntimeError, match="boom"), plain:
        raise RuntimeError("boom")
    now = [m._pyro_context for m in program.modules() if isinstance(m, PyroModule)]
    assert all(a is b for a, b in zip(contexts, now, strict=True))


class WithPyroSample(PyroModule):
    """A program whose latent is a ``PyroSample`` attribute: it needs the active context."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(2))
        self.z = PyroSample(lambda module: dist.Normal(module.loc, 1.0).to_event(1))

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        pyro.sample("x", dist.Normal(self.z, 1.0).to_event(1), obs=x)


def test_a_program_with_pyro_sample_runs_as_it_is():
    program = WithPyroSample()
    plain = plain_parameters(program)
    assert not plain.enabled
    with plain:
        trace = poutine.trace(program.model).get_trace(torch.zeros(2))
    assert "z" in trace.nodes and "loc" in trace.nodes  # its sites as without the context
