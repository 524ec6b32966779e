"""How a training step weighs its labelled and unlabelled rows (ELBOLoss with labels): with
``weighting = "dataset"`` the step's loss per datapoint is an unbiased estimate of Kingma et
al.'s objective per datapoint, checked exactly by averaging over every batch that can be drawn
from a tiny data set whose bounds are deterministic (the linear-Gaussian program with the exact
q(z|x,y): every draw of z gives log p(x, y))."""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from labelled_linear_gaussian import LabelledLinearGaussian
from pyro.infer import TraceEnum_ELBO

import pyrovae
from pyrovae.components.datasets import load_splits
from pyrovae.training import distributed
from pyrovae.training.distributed import ELBOLoss, label_weights

ALPHA = 0.7


class Weighted(LabelledLinearGaussian):
    """The closed-form program with Kingma's auxiliary loss and a row weighting."""

    def __init__(self, weighting: str) -> None:
        super().__init__()
        self.weighting = weighting
        self.alpha = ALPHA

    def auxiliary_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.alpha * dist.Categorical(logits=x @ self.logits).log_prob(y).sum()

    def labelled_bound(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L(x, y) = log p(x, y) with q(z|x,y) exact, per datapoint."""
        w = self.weight
        covariance = w @ w.transpose(-1, -2) + self.noise**2 * torch.eye(w.shape[1], dtype=w.dtype)
        marginal = dist.MultivariateNormal(self.bias[y], covariance_matrix=covariance[y])
        return marginal.log_prob(x) + self._prior_y().log_prob(y)


def _expected_step_loss(program: Weighted, x_u, x_l, y_l, unlabelled_batch, labelled_batch):
    """The mean, over every (unlabelled batch, labelled batch) pair, of the step's loss per
    datapoint (ELBOLoss's sum divided by the batch's size, as the training loop does)."""
    loss = ELBOLoss(program, TraceEnum_ELBO(max_plate_nesting=1))
    fraction = len(x_l) / (len(x_l) + len(x_u))
    values = []
    for u in itertools.combinations(range(len(x_u)), unlabelled_batch):
        for l in itertools.combinations(range(len(x_l)), labelled_batch):  # noqa: E741
            x = torch.cat([x_u[list(u)], x_l[list(l)]])
            y = torch.cat([torch.full((len(u),), -1), y_l[list(l)]])
            step = loss(x, y=y, labelled_fraction=fraction).item() / len(x)
            values.append(step)
    return sum(values) / len(values)


@pytest.fixture
def tiny_set(float64):
    """4 unlabelled and 2 labelled datapoints drawn from the program itself."""
    program = Weighted("dataset")
    pyro.set_rng_seed(0)
    y = torch.randint(3, (6,))
    x = program.model(None, y=y).detach()
    return x[:4], x[4:], y[4:]


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")  # labelled rows
def test_the_dataset_weighted_step_is_an_unbiased_estimate_of_kingmas_objective(tiny_set):
    x_u, x_l, y_l = tiny_set
    program = Weighted("dataset")
    with torch.no_grad():
        unlabelled = -program.exact_unlabelled_bound(x_u)  # -U(x)
        labelled = -program.labelled_bound(x_l, y_l)  # -L(x, y)
        classify = -dist.Categorical(logits=x_l @ program.logits).log_prob(y_l)
    n = len(x_u) + len(x_l)
    # Kingma et al.'s J^alpha / N: each datapoint once, the auxiliary loss on the labelled mean.
    objective = float((unlabelled.sum() + labelled.sum()) / n + ALPHA * classify.mean())
    # 3 of the 4 unlabelled and 1 of the 2 labelled per step: rows weighted 4/3 * 4/6 and 4 * 2/6.
    expected = _expected_step_loss(program, x_u, x_l, y_l, unlabelled_batch=3, labelled_batch=1)
    assert expected == pytest.approx(objective, rel=1e-10)


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")
def test_the_batch_weighted_step_counts_every_row_alike(tiny_set):
    x_u, x_l, y_l = tiny_set
    program = Weighted("batch")
    with torch.no_grad():
        unlabelled = -program.exact_unlabelled_bound(x_u)
        labelled = -program.labelled_bound(x_l, y_l)
        classify = -dist.Categorical(logits=x_l @ program.logits).log_prob(y_l)
    # 1 unlabelled and 1 labelled row per step: the labelled mean weighs 1/2, not 2/6.
    batch = float((unlabelled.mean() + labelled.mean()) / 2 + ALPHA * classify.mean())
    expected = _expected_step_loss(program, x_u, x_l, y_l, unlabelled_batch=1, labelled_batch=1)
    assert expected == pytest.approx(batch, rel=1e-10)
    kingma = float((unlabelled.sum() + labelled.sum()) / 6 + ALPHA * classify.mean())
    assert abs(expected - kingma) > 1.0  # the two objectives differ on this data


def test_label_weights():
    # MNIST at 100 labels: 200 rows (100 + 100), 100 of 50,000 training images labelled.
    unlabelled, labelled = label_weights(200, 100, "dataset", 100 / 50_000)
    assert unlabelled == pytest.approx(200 * 0.998 / 100)
    assert labelled == pytest.approx(200 * 0.002 / 100)
    assert label_weights(200, 100, "batch", 0.002) == (1.0, 1.0)
    assert label_weights(200, 100, "dataset", None) == (1.0, 1.0)
    assert label_weights(100, 100, "dataset", 0.002) == (1.0, 1.0)  # one kind only
    assert label_weights(100, 0, "dataset", 0.002) == (1.0, 1.0)


@pytest.mark.parametrize("weighting", ["dataset", "batch"])
def test_training_hands_the_loss_the_labelled_share_of_the_training_set(
    weighting, monkeypatch, tmp_path
):
    seen = []

    def recording(rows, labelled, chosen, fraction):
        seen.append((rows, labelled, chosen, fraction))
        return label_weights(rows, labelled, chosen, fraction)

    monkeypatch.setattr(distributed, "label_weights", recording)
    program = f"{{name='m2', latent=4, hidden=[32], classifier=[32], weighting='{weighting}'}}"
    overrides = [
        "data.name=digits",
        "data.labelled=100",
        f"model.program={program}",
        "train.estimator=enum",
        "train.batch_size=300",
        "train.epochs=1",
        "train.device=cpu",
    ]
    config = pyrovae.load_config(None, overrides)
    pyrovae.train(config, out=tmp_path, quiet=True)
    training_images = len(load_splits(config.data, torch.device("cpu")).train)
    assert training_images == 1294  # 1194 unlabelled, 100 labelled
    # 1194 unlabelled images: 3 steps of 300 + 100 and one of 294 + 100.
    assert [(rows, labelled) for rows, labelled, _, _ in seen] == [(400, 100)] * 3 + [(394, 100)]
    assert {(chosen, fraction) for _, _, chosen, fraction in seen} == {(weighting, 100 / 1294)}
