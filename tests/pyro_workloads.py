"""Ordinary Pyro code from Pyro's tutorials, run with or without pyrovae in the same process.

``python tests/pyro_workloads.py plain`` runs the workloads alone; ``... with-pyrovae`` imports
pyrovae first and trains pyrovae VAEs (by SVI and by ``pyrovae.train``) before and between
them. Each prints one JSON object of results; the test compares them: pyrovae must change
nothing in the user's other Pyro code.
"""

from __future__ import annotations

import json
import sys
import tempfile

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn


def classic_vae() -> list[float]:
    """Pyro's VAE tutorial: plain nn.Modules registered with ``pyro.module``."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    encoder = nn.Sequential(nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 4))
    decoder = nn.Sequential(nn.Linear(2, 8), nn.Softplus(), nn.Linear(8, 16))
    x = torch.bernoulli(torch.full((32, 16), 0.3))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", len(x)):
            loc, log_scale = encoder(x).split(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(30)]
    return [*losses[-3:], float(sum(p.detach().sum() for p in pyro.get_param_store().values()))]


def bayesian_regression() -> list[float]:
    """Pyro's Bayesian regression tutorial: PyroModule[nn.Linear], PyroSample and
    AutoDiagonalNormal."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()

    class BayesianRegression(PyroModule):
        def __init__(self, in_features: int, out_features: int) -> None:
            super().__init__()
            self.linear = PyroModule[nn.Linear](in_features, out_features)
            self.linear.weight = PyroSample(
                dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
            )
            self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

        def forward(self, x, y=None):
            sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
            mean = self.linear(x).squeeze(-1)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
            return mean

    x = torch.randn(100, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 3.0 + 0.1 * torch.randn(100)
    model = BayesianRegression(3, 1)
    guide = AutoDiagonalNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(200)]
    predictive = Predictive(model, guide=guide, num_samples=50, return_sites=("obs",))
    prediction = predictive(x[:5])["obs"].mean(0)
    return [*losses[-3:], *guide.median()["linear.bias"].tolist(), *prediction.tolist()]


def autonormal_round_trip() -> list[float]:
    """An AutoNormal trained, its param store saved, cleared and loaded back."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    data = 3.0 + torch.randn(50)

    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(300):
        svi.step(data)
    trained = float(guide.median()["loc"])
    with tempfile.NamedTemporaryFile(suffix=".pt") as handle:
        pyro.get_param_store().save(handle.name)
        pyro.clear_param_store()
        pyro.get_param_store().load(handle.name)
    reloaded = AutoNormal(model)
    reloaded(data)  # sets up the guide's parameters from the loaded store
    return [trained, float(reloaded.median()["loc"]), len(pyro.get_param_store().keys())]


def pyrovae_work() -> None:
    """Train pyrovae VAEs in this process: by SVI (their parameters go to the param store, as
    any PyroModule's do) and by ``pyrovae.train`` (which leaves the store as it found it)."""
    import pyrovae

    config = pyrovae.load_config(
        None, ["model.latent_dim=2", "model.prior=learned_normal", "train.epochs=1"]
    )
    splits = pyrovae.load_splits(config.data, torch.device("cpu"))
    vae = pyrovae.build_vae(config.model, splits.x_shape)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi.step(splits.valid[:50].round())
    store = pyro.get_param_store().get_state()["params"]  # name -> unconstrained tensor
    with tempfile.TemporaryDirectory() as out:
        pyrovae.train(config, out=out, quiet=True)
    after = pyro.get_param_store().get_state()["params"]
    assert after.keys() == store.keys() and all(after[k] is store[k] for k in store)


def main(mode: str) -> None:
    settings = dict(pyro.settings.get())
    if mode == "with-pyrovae":
        import pyrovae  # noqa: F401

        assert dict(pyro.settings.get()) == settings, "importing pyrovae changed pyro.settings"
        pyrovae_work()
    results = {}
    for workload in (classic_vae, bayesian_regression, autonormal_round_trip):
        results[workload.__name__] = workload()
        if mode == "with-pyrovae":
            pyrovae_work()
    results["settings"] = {k: repr(v) for k, v in pyro.settings.get().items()}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
