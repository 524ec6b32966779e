"""Hand-written PyTorch twins of the examples/reproduce/ recipes, trained for a time budget.

Plain ``torch.nn``, no Pyro, no pyrovae model code: each recipe trained for a wall-clock (or
CPU-clock) budget as its TOML says and scored like ``benchmarks/torch_vae_recipe.py``, so
``benchmarks/paired_loglik.py report`` pairs it with the pyrovae run of the same recipe.

    OMP_NUM_THREADS=1 python benchmarks/torch_recipes.py examples/reproduce/tucker_dreg.toml \\
        --data-dir ../shared/data --seconds 240 --cpu-clock --budget 0.003 --block 1000 \\
        --out dreg.pt

From the TOML (read by pyrovae's config reader; ``--budget`` scales its epochs, warm-up and
patience as ``pyrovae train --budget`` does, KEY=VALUE overrides as on pyrovae's command line):
one stochastic layer (``vae``: MLP encoder and decoder, their hidden sizes and activation, a
standard normal or VampPrior prior, a diagonal normal or IAF guide) or two (``two_layer``); a
Bernoulli likelihood; the objective (``trace``: the ELBO averaged over particles; ``iwae``;
``dreg``: IWAE with doubly reparameterized encoder gradients); batch size, Adam's lr and eps,
the KL warm-up (linear over ``warmup_epochs``' steps), the ``burda`` or constant schedule,
early stopping on the validation ELBO (``patience``), the best epoch scored. Training stops at
the recipe's epochs or after ``--seconds`` of training steps (validation not counted, as in
pyrovae's ``epoch_seconds``; ``--cpu-clock``: the process's CPU seconds, to match a run of
``benchmarks/train_cpu_clock.py``), possibly within an epoch, or, with ``train.max_seconds=S``
as on pyrovae's side, at the end of the first epoch whose training seconds reach S. The data are
pyrovae's own splits (``load_splits``), training images binarized afresh every epoch.

The parameters carry pyrovae's names (``encoder.layers.0.weight``, ``flows.0.nn.permutation``,
...): ``load_pyrovae_state`` loads a pyrovae model's weights into the twin.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Normal

sys.path.insert(0, str(Path(__file__).resolve().parent))

from torch_vae_recipe import add_scoring_arguments, score_blocks  # noqa: E402

import pyrovae  # noqa: E402  (the config reader and the data splits only)
from pyrovae.cli.train import scale_to_budget  # noqa: E402
from pyrovae.components.datasets import load_splits  # noqa: E402
from pyrovae.config import Config  # noqa: E402

#: sigma = softplus(raw) + MIN_SCALE in every Gaussian layer (pyrovae's default min_scale).
MIN_SCALE = 1e-4
#: The stable IAF step's gate is sigmoid(logit + GATE_BIAS) (Kingma et al. 2016; Pyro's 2.0).
GATE_BIAS = 2.0
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


class Net(nn.Module):
    """Linear layers of ``sizes`` with ``activation`` between them (``layers.0``, ``layers.2``,
    ...). Any leading batch dimensions."""

    def __init__(self, sizes: list[int], activation: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if i > 0:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Linear(n_in, n_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def gaussian(params: torch.Tensor, dim: int, detach: bool = False) -> Normal:
    """N(loc, softplus(raw) + MIN_SCALE) from the first ``2 dim`` entries of ``params``;
    ``detach``: the same density without gradient to the parameters (DReG's path term)."""
    loc, raw = params[..., :dim], params[..., dim : 2 * dim]
    scale = F.softplus(raw) + MIN_SCALE
    return Normal(loc.detach(), scale.detach()) if detach else Normal(loc, scale)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return Normal(0.0, 1.0).log_prob(z).sum(-1)


def log_bernoulli(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)), summed over the pixels."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )


def log_mixture(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; loc_k, diag scale_k^2) for z ``(..., D)`` and K components
    ``(K, D)``, by matrix products (no ``(..., K, D)`` tensor): the squared distance expanded
    as z^2 / s^2 - 2 z m / s^2 + m^2 / s^2. Equals the broadcast Normal's to float tolerance
    (tests/test_torch_recipes.py)."""
    precision = scale.pow(-2)
    quadratic = (
        z.pow(2) @ precision.T - 2 * z @ (loc * precision).T + (loc.pow(2) * precision).sum(-1)
    )
    log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
    return torch.logsumexp(-0.5 * quadratic - log_norm, -1) - math.log(len(loc))


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 ``mask``."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """A conditional MADE (Germain et al. 2015): from [context, z] to a mean and a gate logit
    per dimension of z, each depending on the context and on the dimensions of z before it in
    a random ``permutation``; ReLU hidden layers whose units have degrees spread evenly."""

    def __init__(self, dim: int, context: int, hidden: list[int]) -> None:
        super().__init__()
        self.register_buffer("permutation", torch.randperm(dim))
        order = torch.empty(dim)
        order[self.permutation] = torch.arange(dim, dtype=order.dtype)
        degrees = [torch.cat([torch.zeros(context), order + 1])]  # the context: degree 0
        degrees += [torch.linspace(1, dim, h).round() - 1 for h in hidden]
        out = (order + 1).repeat(2)  # the means, then the gate logits
        pairs = zip(degrees[:-1], degrees[1:], strict=True)
        masks = [(d_out[:, None] >= d_in).float() for d_in, d_out in pairs]
        masks.append((out[:, None] > degrees[-1]).float())
        sizes = [dim + context, *hidden, 2 * dim]
        self.layers = nn.ModuleList(
            MaskedLinear(n_in, n_out, mask)
            for n_in, n_out, mask in zip(sizes[:-1], sizes[1:], masks, strict=True)
        )
        self.dim = dim

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([context.expand(*z.shape[:-1], -1), z], -1)
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))
        h = self.layers[-1](h)
        return h[..., : self.dim], h[..., self.dim :]


class IAFStep(nn.Module):
    """One stable IAF step (Kingma et al. 2016): z' = s z + (1 - s) m, s = sigmoid(logit + 2),
    with (m, logit) from a MADE over z and the context; returns z' and log |dz'/dz|."""

    def __init__(self, dim: int, context: int, hidden: list[int]) -> None:
        super().__init__()
        self.nn = MADE(dim, context, hidden)

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logit = self.nn(z, context)
        gate = torch.sigmoid(logit + GATE_BIAS)
        return gate * z + (1 - gate) * mean, F.logsigmoid(logit + GATE_BIAS).sum(-1)


class OneLayer(nn.Module):
    """p(z) p(x|z), q(z|x): z of ``latent_dim``, a standard normal or VampPrior prior, a
    diagonal normal or IAF guide, MLP encoder and decoder, a Bernoulli likelihood."""

    def __init__(self, recipe: Config, pixels: int) -> None:
        super().__init__()
        m = recipe.model
        self.dim, prior, guide = m.latent_dim, m.prior, m.guide
        self.context = guide.options["context_dim"] if guide.name == "iaf" else 0
        enc, dec = m.encoder.options, m.decoder.options
        self.encoder = Net([pixels, *enc["hidden"], 2 * self.dim + self.context], enc["activation"])
        self.decoder = Net([self.dim, *dec["hidden"], pixels], dec["activation"])
        self.flows = nn.ModuleList()
        if guide.name == "iaf":
            steps, hidden = guide.options["steps"], list(guide.options["hidden"])
            self.flows.extend(IAFStep(self.dim, self.context, hidden) for _ in range(steps))
        self.vamp = prior.name == "vamp"
        if self.vamp:
            o = prior.options
            init = o["init_mean"] + o["init_std"] * torch.randn(o["components"], pixels)
            self.pseudo_inputs = nn.Parameter(init)
            self.clamp = o["clamp"]

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z): N(0, I), or the VampPrior's mixture of q0(z|u_k) over the pseudo-inputs."""
        if not self.vamp:
            return log_standard_normal(z)
        u = F.hardtanh(self.pseudo_inputs, 0.0, 1.0) if self.clamp else self.pseudo_inputs
        q = gaussian(self.encoder(u), self.dim)
        return log_mixture(z, q.loc, q.scale)

    def log_weights(
        self, x: torch.Tensor, n: int, beta: float = 1.0, path: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(n, batch)`` log w = log p(x|z) + beta (log p(z) - log q(z|x)) at n reparameterized
        draws of z, and the draws; ``path``: log q without gradient to its parameters."""
        params = self.encoder(x)
        if path and self.flows:
            raise ValueError("dreg: the hand-written twin has it for a diagonal normal guide")
        q0 = gaussian(params, self.dim)
        z = q0.rsample((n,))
        log_q = gaussian(params, self.dim, detach=path).log_prob(z).sum(-1)
        context = params[..., 2 * self.dim :]
        for step in self.flows:
            z, log_det = step(z, context)
            log_q = log_q - log_det
        log_px = log_bernoulli(self.decoder(z), x)
        return log_px + beta * (self.log_prior(z) - log_q), [z]


class TwoLayer(nn.Module):
    """Burda et al.'s two stochastic layers: p(z2) p(z1|z2) p(x|z1), q(z1|x) q(z2|z1), every
    conditional a diagonal normal from an MLP, p(x|z1) Bernoulli."""

    def __init__(self, recipe: Config, pixels: int) -> None:
        super().__init__()
        o = recipe.model.program.options
        self.dim1, self.dim2 = o["latent1"], o["latent2"]
        h1, h2, act = list(o["hidden1"]), list(o["hidden2"]), o["activation"]
        self.encoder1 = Net([pixels, *h1, 2 * self.dim1], act)
        self.encoder2 = Net([self.dim1, *h2, 2 * self.dim2], act)
        self.decoder2 = Net([self.dim2, *h2[::-1], 2 * self.dim1], act)
        self.decoder1 = Net([self.dim1, *h1[::-1], pixels], act)

    def log_weights(
        self, x: torch.Tensor, n: int, beta: float = 1.0, path: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(n, batch)`` log w = log p(x|z1) + beta (log p(z1, z2) - log q(z1, z2|x)) at n
        reparameterized draws, and the draws (z1, z2)."""
        if path:
            raise ValueError("dreg: the hand-written twin has it for one stochastic layer")
        q1 = gaussian(self.encoder1(x), self.dim1)
        z1 = q1.rsample((n,))
        q2 = gaussian(self.encoder2(z1), self.dim2)
        z2 = q2.rsample()
        log_q = q1.log_prob(z1).sum(-1) + q2.log_prob(z2).sum(-1)
        log_p = log_standard_normal(z2) + gaussian(self.decoder2(z2), self.dim1).log_prob(z1).sum(
            -1
        )
        log_px = log_bernoulli(self.decoder1(z1), x)
        return log_px + beta * (log_p - log_q), [z1, z2]


class Twin(nn.Module):
    """The recipe's model for images of ``pixels`` binary pixels (flattened), with its
    objective and its importance-sampled log-likelihood."""

    def __init__(self, recipe: Config, pixels: int = 784) -> None:
        super().__init__()
        two = recipe.model.program.name == "two_layer"
        self.model = TwoLayer(recipe, pixels) if two else OneLayer(recipe, pixels)
        estimator = recipe.train.estimator
        self.objective, self.particles = estimator.name, estimator.options.get("particles", 1)
        if self.objective not in ("trace", "iwae", "dreg"):
            raise SystemExit(f"torch_recipes: no hand-written {self.objective!r} objective")

    def bound(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """Per image, the objective's value, with the objective's gradient: the ELBO averaged
        over particles (trace), the IWAE bound, or IWAE with DReG's encoder gradient
        (Tucker et al. 2018, eq. 5: the draws' gradient scaled by the normalized weights, log q
        without its parameters' gradient)."""
        dreg = self.objective == "dreg"
        log_w, draws = self.model.log_weights(x, self.particles, beta, path=dreg)
        if self.objective == "trace":
            return log_w.mean(0)
        iwae = torch.logsumexp(log_w, 0) - math.log(self.particles)
        if not dreg:
            return iwae
        weights = torch.softmax(log_w.detach(), 0)
        (z,) = draws
        z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
        surrogate = (weights * log_w).sum(0)
        return iwae.detach() + surrogate - surrogate.detach()

    @torch.no_grad()
    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The one-sample ELBO of each image (beta = 1): the validation score."""
        return self.model.log_weights(x, 1)[0][0]

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
        """log p(x) by importance sampling with the guide as proposal, ``k`` samples."""
        parts = [self.model.log_weights(x, min(chunk, k - s))[0] for s in range(0, k, chunk)]
        return torch.logsumexp(torch.cat(parts), 0) - math.log(k)


def burda_factor(epochs_done: int) -> float:
    """Burda et al. (2015): the lr is 10^(-i/7) times the first in stage i, which lasts 3^i
    epochs, i = 0..7; then it stays."""
    stage, end = 0, 1
    while stage < 7 and epochs_done >= end:
        stage += 1
        end += 3**stage
    return 10.0 ** (-stage / 7)


def lr_factor(recipe: Config, epochs_done: int) -> float:
    """The schedule's lr over train.lr after ``epochs_done`` epochs (burda or constant)."""
    name = recipe.train.schedule.name
    if name == "constant":
        return 1.0
    if name == "burda":
        return burda_factor(epochs_done)
    raise SystemExit(f"torch_recipes: no hand-written {name!r} schedule")


def kl_weight(step: int, warmup_steps: int) -> float:
    """The KL weight of a step: linear from 1 / warmup_steps to 1 over the warm-up."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def validation_elbo(twin: Twin, valid: torch.Tensor) -> float:
    return float(torch.cat([twin.elbo(v) for v in valid.split(1000)]).mean())


def train(
    twin: Twin,
    recipe: Config,
    train_x: torch.Tensor,
    valid: torch.Tensor,
    seconds: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[dict], float, dict]:
    """Adam steps on the objective until the recipe's epochs, early stopping, its time budget
    (``train.max_seconds``) or ``seconds`` of training on ``clock``; returns the curve, the
    training seconds and the best epoch's weights."""
    t = recipe.train
    opt = torch.optim.Adam(twin.parameters(), lr=t.lr, eps=t.adam_eps)
    steps_per_epoch = math.ceil(len(train_x) / t.batch_size)
    warmup_steps = t.warmup_epochs * steps_per_epoch
    curve: list[dict] = []
    best, best_epoch, spent, step = -math.inf, 0, 0.0, 0
    best_state = copy.deepcopy(twin.state_dict())
    for epoch in range(1, t.epochs + 1):
        for group in opt.param_groups:
            group["lr"] = t.lr * lr_factor(recipe, epoch - 1)
        started, total, seen = clock(), 0.0, 0
        x_epoch = torch.bernoulli(train_x)
        for idx in torch.randperm(len(x_epoch)).split(t.batch_size):
            if spent + clock() - started > seconds:
                break
            loss = -twin.bound(x_epoch[idx], kl_weight(step, warmup_steps)).sum()
            opt.zero_grad()
            (loss / len(idx)).backward()
            opt.step()
            total, seen, step = total + float(loss.detach()), seen + len(idx), step + 1
        spent += clock() - started
        valid_elbo = validation_elbo(twin, valid)
        row = {
            "epoch": epoch,
            "fraction": round(seen / len(x_epoch), 4),
            "seconds": round(spent, 3),
            "train_elbo": round(-total / max(seen, 1), 3),
            "valid_elbo": round(valid_elbo, 3),
            "lr": opt.param_groups[0]["lr"],
        }
        curve.append(row)
        print(json.dumps(row), flush=True)
        if valid_elbo > best:
            best, best_epoch, best_state = valid_elbo, epoch, copy.deepcopy(twin.state_dict())
        if seen < len(x_epoch) or (t.patience > 0 and epoch - best_epoch >= t.patience):
            break
        if 0 < t.max_seconds <= spent:  # pyrovae's time budget: whole epochs
            break
    return curve, spent, best_state


def load_pyrovae_state(twin: Twin, state: dict[str, torch.Tensor]) -> None:
    """Load a pyrovae model's weights (``program.state_dict()``) into the twin."""
    renamed = {}
    for key, value in state.items():
        if key in ("prior.loc", "prior.scale"):
            continue  # the standard normal's constants
        if key == "prior.pseudo_inputs_unconstrained":
            key, value = "pseudo_inputs", value.reshape(len(value), -1)
        renamed["model." + key.removeprefix("posterior.")] = value
    twin.load_state_dict(renamed)


def read_recipe(path: str, overrides: list[str], budget: float | None, data_dir: str) -> Config:
    """The recipe's config with ``overrides``, its epochs scaled by ``budget``, on the CPU."""
    recipe = pyrovae.load_config(path, [*overrides, f'data.root="{data_dir}"'])
    return scale_to_budget(recipe, budget) if budget else recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe", help="a TOML of examples/reproduce/")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seconds", type=float, default=math.inf, help="training time budget")
    p.add_argument(
        "--cpu-clock",
        action="store_true",
        help="count --seconds in this process's CPU time (1 thread: the wall-clock of an idle"
        " core), so that other jobs on a loaded machine do not shorten the budget",
    )
    p.add_argument("--budget", type=float, help="scale the recipe's epochs as pyrovae --budget")
    add_scoring_arguments(p)
    a = p.parse_args()
    recipe = read_recipe(a.recipe, a.overrides, a.budget, a.data_dir)
    splits = load_splits(recipe.data, torch.device("cpu"))
    train_x, valid, test = (
        x.reshape(len(x), -1) for x in (splits.train, splits.valid, splits.test)
    )
    test = test if a.test_limit is None else test[: a.test_limit]
    torch.manual_seed(a.seed)
    twin = Twin(recipe, test.shape[1])
    if a.load:
        saved = torch.load(a.load)
        twin.load_state_dict(saved["state"])
        curve, train_s = saved["curve"], saved["summary"]["train_seconds"]
    else:
        clock = time.process_time if a.cpu_clock else time.perf_counter
        curve, train_s, best_state = train(twin, recipe, train_x, valid, a.seconds, clock)
        twin.load_state_dict(best_state)
    score_blocks(twin, test, curve, train_s, a)


if __name__ == "__main__":
    main()
