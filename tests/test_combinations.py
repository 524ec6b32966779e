"""Every prior x guide x likelihood in the registry builds, trains two steps on digits with the
real training loop (vectorized particles), samples and evaluates; the one impossible pair
(VampPrior with a guide that has no inverse) is refused with a one-line ConfigError."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pyrovae.components.datasets import Splits, check_likelihood, load_splits
from pyrovae.components.programs.vae import build_vae
from pyrovae.config import Component, Config, DataConfig, ModelConfig, TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.elbo import negative_elbo
from pyrovae.registry import registered
from pyrovae.training.distributed import Group
from pyrovae.training.loop import TrainingLoop

OPTIONS = {
    "vamp": {"components": 4},
    "mixture": {"components": 3},
    "flow": {"steps": 2},
    "iaf": {"context_dim": 4},
    "planar": {"steps": 2, "context_dim": 4},
    # learned scales, so the test sees the likelihood's own parameter trained as well
    "gaussian": {"learn_scale": True},
    "laplace": {"learn_scale": True},
    "student_t": {"learn_scale": True, "per_pixel": True},
}
COMBINATIONS = list(
    itertools.product(registered("prior"), registered("guide"), registered("likelihood"))
)


@pytest.fixture(scope="module")
def splits() -> Splits:
    full = load_splits(DataConfig(name="digits"), torch.device("cpu"))
    # 32 training images in batches of 16: an epoch is two steps.
    return Splits(full.train[:32], full.valid[:20], full.test[:20], dynamic_binarization=True)


def _config(prior: str, guide: str, likelihood: str) -> Config:
    net = Component("mlp", {"hidden": (16,)})
    return Config(
        model=ModelConfig(
            latent_dim=3,
            prior=Component(prior, OPTIONS.get(prior, {})),
            guide=Component(guide, OPTIONS.get(guide, {})),
            likelihood=Component(likelihood, OPTIONS.get(likelihood, {})),
            encoder=net,
            decoder=net,
        ),
        train=TrainConfig(
            estimator=Component("meanfield", {"particles": 2}), epochs=1, batch_size=16, lr=1e-2
        ),
    )


@pytest.mark.parametrize(
    ("prior", "guide", "likelihood"), COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS]
)
def test_combination_builds_trains_samples_evaluates(prior, guide, likelihood, splits, tmp_path):
    config = _config(prior, guide, likelihood)
    if (prior, guide) == ("vamp", "planar"):
        with pytest.raises(ConfigError, match="vamp.*no inverse") as error:
            build_vae(config.model, splits.x_shape)
        assert "\n" not in str(error.value)
        return
    vae = build_vae(config.model, splits.x_shape)
    check_likelihood(splits, vae.likelihood)
    before = {name: p.detach().clone() for name, p in vae.named_parameters()}

    loop = TrainingLoop(config, vae, splits, Group(torch.device("cpu")), quiet=True)
    metrics = loop.run(tmp_path)
    assert loop.step == 2 and math.isfinite(metrics[-1]["valid_loss"])
    unchanged = [n for n, p in vae.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"parameters not trained: {unchanged}"

    vae.eval()
    samples = vae.sample(4)
    assert samples.shape == (4, *splits.x_shape) and torch.isfinite(samples).all()
    if vae.likelihood.data_range is not None:  # the likelihood's mean lies in its support
        low, high = vae.likelihood.data_range
        assert samples.min() >= low and samples.max() <= high
    assert torch.isfinite(vae.reconstruct(splits.valid[:4])).all()
    assert math.isfinite(negative_elbo(vae, splits.test))
