"""Save and load of every issue-4 component: ``pyrovae.train`` then ``pyrovae.load_run`` gives
a model with identical outputs (samples, reconstructions, densities, the bound, all at fixed
seeds); and every example config parses and round-trips through TOML."""

from __future__ import annotations

from pathlib import Path

import pyro
import pytest
import torch

import pyrovae
from pyrovae.config import Config, load_config
from pyrovae.evaluation.compare import load_variants, merge_variant
from pyrovae.inference.elbo import negative_elbo

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Four runs cover every new prior, guide, likelihood and network (and two flow transforms).
RUNS = {
    "vamp-iaf-laplace-conv": [
        'model.prior={name="vamp",components=4}',
        'model.guide={name="iaf",context_dim=4}',
        'model.likelihood={name="laplace",learn_scale=true,per_pixel=true}',
        'model.encoder={name="conv_encoder",channels=[4,8],hidden=16}',
        'model.decoder={name="conv_decoder",channels=[4,8],hidden=16}',
    ],
    "flow-planar-student_t": [
        'model.prior={name="flow",transform="spline_coupling",steps=2}',
        'model.guide={name="planar",steps=2,context_dim=4}',
        'model.likelihood={name="student_t",learn_scale=true}',
    ],
    "mixture-full_normal-gaussian": [
        'model.prior={name="mixture",components=3}',
        "model.guide=full_normal",
        'model.likelihood={name="gaussian",learn_scale=true}',
    ],
    "flow_autoregressive-continuous_bernoulli": [
        'model.prior={name="flow",transform="affine_autoregressive",steps=2}',
        "model.likelihood=continuous_bernoulli",
        "data.binarize=none",
    ],
}
COMMON = [
    "model.latent_dim=3",
    'model.encoder={name="mlp",hidden=[16]}',
    'model.decoder={name="mlp",hidden=[16]}',
    "train.epochs=1",
    "train.batch_size=200",
    "train.device=cpu",
]


def _outputs(vae, x: torch.Tensor) -> list[torch.Tensor]:
    vae.eval()
    pyro.set_rng_seed(7)
    z = torch.randn(6, vae.latent_dim)
    return [
        vae.sample(4),
        vae.reconstruct(x),
        vae.prior().log_prob(z).detach(),
        vae.encode(x).rsample().detach(),
        torch.tensor(negative_elbo(vae, x, particles=3)),
    ]


@pytest.mark.parametrize("overrides", list(RUNS.values()), ids=list(RUNS))
def test_train_then_load_run_gives_identical_outputs(overrides, tmp_path, digits_batch):
    config = pyrovae.load_config(None, COMMON + overrides)
    run = pyrovae.train(config, out=tmp_path / "run", quiet=True)
    loaded_config, loaded, _ = pyrovae.load_run(run.directory, checkpoint="last")
    assert loaded_config == config
    for name, value in run.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    x = digits_batch[:10]
    for before, after in zip(_outputs(run.model, x), _outputs(loaded, x), strict=True):
        assert torch.equal(before, after)


@pytest.mark.parametrize(
    "path", sorted(EXAMPLES.glob("configs/*.toml")), ids=lambda p: str(p.relative_to(EXAMPLES))
)
def test_example_configs_parse_and_round_trip(path):
    config = load_config(path)
    assert Config.from_dict(config.to_dict()) == config


#: Each variants file of ``pyrovae compare`` and the base config it is written for.
VARIANT_FILES = {
    "compare_estimators.toml": "configs/mnist.toml",
    "compare_components.toml": "configs/components.toml",
    "compare_two_layer.toml": "configs/two_layer_mnist.toml",
}


def test_every_variants_file_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.toml")) == sorted(VARIANT_FILES)


@pytest.mark.parametrize(("variants", "base"), VARIANT_FILES.items(), ids=list(VARIANT_FILES))
def test_example_variants_merge_into_valid_configs(variants, base):
    base_config = load_config(EXAMPLES / base)
    for name, table in load_variants(EXAMPLES / variants).items():
        config = Config.from_dict(merge_variant(base_config.to_dict(), table))
        assert Config.from_dict(config.to_dict()) == config, name
