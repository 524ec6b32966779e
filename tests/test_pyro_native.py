"""pyrovae's programs under Pyro's own idioms: a plain ``pyro.infer.SVI`` loop trains them, the
driver of ``pyrovae train`` optimizes the same objective, ``Predictive`` and ``model(None)``
work, two programs never share a parameter, and pyrovae changes nothing in other Pyro code."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pyro
import pytest
import torch
from conftest import REPO, tiny
from pyro.infer import SVI, Predictive, RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

import pyrovae
from pyrovae.registry import build, builtin
from pyrovae.training.distributed import Group
from pyrovae.training.loop import TrainingLoop

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return pyrovae.load_splits(tiny().data, CPU)


def batch(splits, n: int = 100) -> torch.Tensor:
    return torch.bernoulli(splits.train[:n], generator=torch.Generator().manual_seed(0))


def svi_run(program, elbo, x, *args, steps: int = 25) -> tuple[list[float], list[str]]:
    """Train by plain SVI on ``(x, *args)``; the losses and the names of the parameters that
    did not move."""
    before = {k: v.detach().clone() for k, v in program.named_parameters()}
    svi = SVI(program.model, program.guide, Adam({"lr": 1e-2}), elbo)
    losses = [svi.step(x, *args) for _ in range(steps)]
    still = [k for k, v in program.named_parameters() if torch.equal(before[k], v)]
    return losses, still


ELBOS = {
    "Trace_ELBO": lambda: Trace_ELBO(),
    "TraceMeanField_ELBO": lambda: TraceMeanField_ELBO(),
    "TraceEnum_ELBO": lambda: TraceEnum_ELBO(max_plate_nesting=1),
    "RenyiELBO": lambda: RenyiELBO(alpha=0.5, num_particles=3),
    **{
        f"pyrovae:{name}": (lambda name=name: build("estimator", name, {}, "e"))
        for name in builtin("estimator")
    },
}


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")
@pytest.mark.parametrize("name", list(ELBOS))
def test_svi_with_every_elbo_trains_every_parameter(name, splits):
    program = pyrovae.build_program(tiny().model, splits.x_shape)
    losses, still = svi_run(program, ELBOS[name](), batch(splits))
    assert not still, f"parameters that SVI did not move: {still}"
    assert sum(losses[-5:]) < sum(losses[:5])


PROGRAMS = (
    [("prior", name) for name in builtin("prior")]
    + [("guide", name) for name in builtin("guide")]
    + [("program", name) for name in builtin("program")]
)


@pytest.mark.parametrize(("kind", "name"), PROGRAMS, ids=[f"{k}-{n}" for k, n in PROGRAMS])
def test_svi_trains_every_model_pyrovae_builds(kind, name, splits):
    overrides = {
        "prior": [f"model.prior={name}"],
        "guide": [f"model.guide={name}"],
        "program": [f"model.program={name}"],
    }[kind]
    x, args, elbo = batch(splits), (), Trace_ELBO()
    if (kind, name) == ("program", "two_layer"):
        config = pyrovae.load_config(
            None, [*overrides, "model.program.latent1=4", "model.program.latent2=2"]
        )
    elif (kind, name) == ("program", "m2"):  # unlabelled: the label is summed out
        config = pyrovae.load_config(None, [*overrides, "model.program.latent=4"])
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
    elif (kind, name) == ("program", "cvae"):  # needs the labels beside the images
        config = tiny(*overrides)
        args = (splits.valid_labels[: len(x)],)
        x = torch.bernoulli(splits.valid[: len(x)], generator=torch.Generator().manual_seed(0))
    else:
        config = tiny(*overrides)
    program = pyrovae.build_program(config.model, splits.x_shape, num_classes=splits.num_classes)
    losses, still = svi_run(program, elbo, x, *args)
    assert not still, f"parameters that SVI did not move: {still}"
    assert sum(losses[-5:]) < sum(losses[:5])


def test_svi_and_the_driver_optimize_the_same_objective(splits):
    config = tiny("train.estimator=trace", "model.prior=learned_normal", "train.lr=0.01")
    driven = pyrovae.build_program(config.model, splits.x_shape)
    plain = copy.deepcopy(driven)  # same initial weights, a program (and names) of its own
    loop = TrainingLoop(config, driven, splits, Group(CPU), quiet=True)
    svi = SVI(plain.model, plain.guide, Adam({"lr": 0.01}), Trace_ELBO())
    x = batch(splits, 50)
    for step in range(5):
        pyro.set_rng_seed(step)
        loop.optimizer.zero_grad()
        loss = loop.loss_fn(x)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in driven.named_parameters()}
        pyro.set_rng_seed(step)
        plain.zero_grad()
        svi_loss = Trace_ELBO().loss_and_grads(plain.model, plain.guide, x)  # what SVI.step runs
        assert svi_loss == pytest.approx(loss.item(), rel=1e-6)
        for k, p in plain.named_parameters():  # float32 rounding apart (fused Adam's steps)
            assert torch.allclose(p.grad, grads[k], rtol=1e-4, atol=1e-4), k
        loop.optimizer.step()
        pyro.set_rng_seed(step)
        assert svi.step(x) == pytest.approx(loss.item(), rel=1e-6)
    for (k, a), b in zip(driven.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), k


def test_two_programs_trained_by_svi_never_share_a_parameter(splits):
    config = tiny("model.prior=learned_normal")
    first = pyrovae.build_program(config.model, splits.x_shape)
    second = pyrovae.build_program(config.model, splits.x_shape)
    second.load_state_dict(first.state_dict())  # equal values, distinct tensors
    untouched = {k: v.detach().clone() for k, v in second.named_parameters()}
    _, still = svi_run(first, Trace_ELBO(), batch(splits))
    assert not still
    for k, v in second.named_parameters():
        assert torch.equal(v, untouched[k]), f"training the first program moved the second's {k}"
    _, still = svi_run(second, Trace_ELBO(), batch(splits))
    assert not still
    names = list(pyro.get_param_store().keys())
    firsts = {n for n in names if n.startswith(first._pyro_name + ".")}
    seconds = {n for n in names if n.startswith(second._pyro_name + ".")}
    assert firsts and seconds and len(firsts) == len(seconds)
    assert not {id(p) for p in first.parameters()} & {id(p) for p in second.parameters()}


def test_importing_pyrovae_changes_no_other_pyro_code():
    def results(mode: str) -> dict:
        done = subprocess.run(
            [sys.executable, str(REPO / "tests" / "pyro_workloads.py"), mode],
            capture_output=True,
            text=True,
            timeout=300,
            env={"PYTHONPATH": str(REPO), "PATH": ""},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    plain, mixed = results("plain"), results("with-pyrovae")
    assert mixed == plain
    assert plain["autonormal_round_trip"][1] == pytest.approx(3.0, abs=0.2)  # trained, reloaded


def test_predictive_draws_x_and_model_none_generates(splits):
    program = pyrovae.build_program(tiny().model, splits.x_shape)
    x = batch(splits, 20)
    draws = Predictive(program.model, guide=program.guide, num_samples=30)(x)
    assert draws["z"].shape == (30, 20, 4) and draws["x"].shape == (30, *x.shape)
    assert set(draws["x"].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(draws["x"][0], x)  # posterior-predictive draws, not the data
    assert program.model(None).shape == (1, *splits.x_shape)
    assert program.model(None, batch_size=7).shape == (7, *splits.x_shape)


def test_pyro_module_and_the_torch_optimizer_route_train(splits):
    program = pyrovae.build_program(tiny().model, splits.x_shape)
    x = batch(splits)

    def model(x):
        pyro.module("vae", program)
        return program.model(x)

    def guide(x):
        pyro.module("vae", program)
        return program.guide(x)

    before = {k: v.detach().clone() for k, v in program.named_parameters()}
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(5):
        svi.step(x)
    assert all(not torch.equal(before[k], v) for k, v in program.named_parameters())
    optimizer = torch.optim.Adam(program.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        optimizer.zero_grad()
        loss = Trace_ELBO().differentiable_loss(program.model, program.guide, x)
        loss.backward()
        optimizer.step()
        first = first if first is not None else float(loss)
    assert float(loss) < first
