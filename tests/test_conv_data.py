"""Convolutional networks on 28x28 and 32x32 images with leading particle dimensions; the
Laplace and Student-t likelihoods against their closed-form densities; CIFAR-10's loader on a
tiny fake folder in torchvision's format, and its one-line error when the data is missing."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from pyrovae.components.datasets import load_splits
from pyrovae.components.likelihoods import Laplace, StudentT
from pyrovae.components.networks.conv import ConvDecoder, ConvEncoder
from pyrovae.config import DataConfig
from pyrovae.errors import ConfigError, DataError
from pyrovae.registry import lookup


@pytest.mark.parametrize("image", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 30, 30)], ids=str)
def test_conv_networks_keep_leading_dims_and_do_not_mix_them(image):
    torch.manual_seed(0)
    encoder = ConvEncoder(image, (6,), channels=(4, 8), hidden=16)
    decoder = ConvDecoder((3,), image, channels=(4, 8), hidden=16)
    x = torch.rand(2, 5, *image)  # (particles, batch, C, H, W)
    z = torch.randn(2, 5, 3)
    out, recon = encoder(x), decoder(z)
    assert out.shape == (2, 5, 6) and recon.shape == (2, 5, *image)
    # Each element is mapped on its own: the same as the network applied to that one element.
    torch.testing.assert_close(out[1, 3], encoder(x[1, 3]))
    torch.testing.assert_close(recon[0, 4], decoder(z[0, 4]))


def test_conv_decoder_folds_parameter_dims_into_channels():
    decoder = ConvDecoder((3,), (2, 3, 32, 32), channels=(4,), hidden=0)
    assert decoder(torch.randn(7, 3)).shape == (7, 2, 3, 32, 32)


def test_conv_networks_refuse_wrong_shapes():
    with pytest.raises(ConfigError, match="conv_encoder: needs images"):
        ConvEncoder((10,), (6,))
    with pytest.raises(ConfigError, match="conv_decoder: needs an image"):
        ConvDecoder((3,), (6,))
    with pytest.raises(ConfigError, match="to nothing"):
        ConvEncoder((1, 8, 8), (6,), channels=(4, 4, 4, 4))


def test_laplace_and_student_t_densities_are_the_closed_forms():
    x = torch.rand(4, 1, 2, 2)
    loc = torch.rand(4, 1, 2, 2)
    b = 0.3
    laplace = Laplace((1, 2, 2), scale=b)(loc).log_prob(x)
    expected = (-(x - loc).abs() / b - math.log(2 * b)).sum((-3, -2, -1))
    torch.testing.assert_close(laplace, expected)

    df, s = 4.0, 0.2
    student = StudentT((1, 2, 2), df=df, scale=s)(loc).log_prob(x)
    t = (x - loc) / s
    log_norm = (
        math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi) - math.log(s)
    )
    expected = (log_norm - (df + 1) / 2 * torch.log1p(t**2 / df)).sum((-3, -2, -1))
    torch.testing.assert_close(student, expected)


def test_location_scale_likelihoods_learn_or_fix_the_scale():
    learned = StudentT((1, 2, 2), learn_scale=True, per_pixel=True)
    assert dict(learned.named_parameters())["scale_unconstrained"].shape == (1, 2, 2)
    fixed = Laplace((1, 2, 2))
    assert not list(fixed.parameters()) and fixed.scale.shape == ()
    with pytest.raises(ConfigError, match="df must be > 1"):
        StudentT((1, 2, 2), df=1.0)
    with pytest.raises(ConfigError, match="laplace: scale must be > 0"):
        Laplace((1, 2, 2), scale=0.0)


def _fake_cifar(root, n_per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A cifar-10-batches-py folder as torchvision reads it: pickled dicts of (N, 3072) uint8
    rows in channel-major order, five training batches and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        batches[name] = data
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": [0] * n_per_batch}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    train = np.concatenate([batches[f"data_batch_{i}"] for i in range(1, 6)])
    return train, batches["test_batch"]


def test_cifar10_loads_a_folder_in_torchvision_format(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    train, test = _fake_cifar(tmp_path)
    # The fake files cannot match torchvision's MD5 sums; everything else is torchvision's code.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    config = DataConfig(name="cifar10", root=str(tmp_path), download=False)
    dataset = lookup("dataset", "cifar10")(config)
    assert dataset.train.shape == (20, 3, 32, 32) and dataset.test.shape == (4, 3, 32, 32)
    # Channel-major rows: pixel (c, h, w) of image i is row i, column c * 1024 + h * 32 + w.
    expected = torch.as_tensor(train.reshape(20, 3, 32, 32), dtype=torch.float32) / 255
    torch.testing.assert_close(dataset.train, expected)
    assert float(dataset.test[2, 1, 5, 7]) == pytest.approx(test[2, 1024 + 5 * 32 + 7] / 255)
    splits = load_splits(
        DataConfig(
            name="cifar10", root=str(tmp_path), download=False, binarize="none", validation_size=4
        ),
        torch.device("cpu"),
    )
    assert splits.x_shape == (3, 32, 32) and len(splits.valid) == 4


def test_cifar10_missing_offline_is_one_line_naming_the_folder(tmp_path):
    config = DataConfig(name="cifar10", root=str(tmp_path), download=False)
    with pytest.raises(DataError) as error:
        lookup("dataset", "cifar10")(config)
    message = str(error.value)
    assert "CIFAR10 is not in" in message and "cifar-10-batches-py" in message
    assert "\n" not in message
