"""Labels in the data (``data.labelled``, labelled files, labelled batches).

This file proves:
- the digits' labels are scikit-learn's targets of the very same images, in every split;
- ``data.labelled = N`` keeps exactly N training labels, balanced per class (the remainder to
  the first classes), the same ones for the same ``data.labelled_seed`` whatever the training
  seed, nested across counts, hidden (-1) everywhere else; validation and test keep all theirs;
- label files (dict forms and ``data``/``labels``) load aligned, and every bad label file is a
  one-line DataError (and, from the command line, status 2 and one line, no traceback);
- MNIST's idx label files must count as many labels as images;
- ``labelled_batches`` covers every hidden-label image once per epoch, cycles the labelled ones,
  draws from the generator alone, and leaves the data as it was;
- the real MNIST has 60,000 + 10,000 labels in 0..9 (skipped when absent).
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny

import pyrovae
from pyrovae.components.datasets import load_splits
from pyrovae.components.labelled_batches import labelled_batches, labelled_steps
from pyrovae.components.labels import HIDDEN
from pyrovae.errors import ConfigError, DataError

CPU = torch.device("cpu")


def splits_of(*overrides: str):
    return load_splits(tiny(*overrides).data, CPU)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


# ------------------------------------------------------------------ digits
def test_digits_labels_are_sklearns_targets_of_the_same_images():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    targets: dict[bytes, set[int]] = {}  # a few images occur twice: with the same label
    for image, target in zip(bunch.images, bunch.target, strict=True):
        targets.setdefault((image / 16).astype(np.float32).tobytes(), set()).add(int(target))
    splits = load_splits(tiny("data.binarize=none").data, CPU)  # images as stored
    assert splits.num_classes == 10 and splits.has_labels
    for x, y in (
        (splits.train, splits.train_labels),
        (splits.valid, splits.valid_labels),
        (splits.test, splits.test_labels),
    ):
        assert y.dtype == torch.int64 and len(y) == len(x)
        for image, label in zip(x, y, strict=True):
            assert targets[image[0].numpy().tobytes()] == {int(label)}


def test_balanced_selection_keeps_exact_counts_per_class_and_hides_the_rest():
    full = splits_of()
    assert (full.train_labels >= 0).all() and len(full.labelled_indices) == len(full.train)
    for count, per_class in ((100, [10] * 10), (23, [3, 3, 3] + [2] * 7)):
        splits = splits_of(f"data.labelled={count}")
        kept = splits.train_labels != HIDDEN
        assert int(kept.sum()) == count
        assert torch.bincount(splits.train_labels[kept], minlength=10).tolist() == per_class
        # kept labels are the true ones; hidden ones are -1; valid and test keep all theirs
        assert torch.equal(splits.train_labels[kept], full.train_labels[kept])
        assert set(splits.train_labels[~kept].tolist()) == {HIDDEN}
        assert torch.equal(splits.valid_labels, full.valid_labels)
        assert torch.equal(splits.test_labels, full.test_labels)
        assert torch.equal(splits.labelled_indices, kept.nonzero().squeeze(1))
        assert torch.equal(splits.train, full.train)  # images untouched


def test_selection_depends_on_the_labelled_seed_alone_and_is_nested():
    chosen = {}
    for count, seed, train_seed in ((100, 0, 0), (100, 0, 7), (100, 1, 0), (600, 0, 0)):
        overrides = (f"data.labelled={count}", f"data.labelled_seed={seed}")
        splits = splits_of(*overrides, f"train.seed={train_seed}")
        chosen[count, seed, train_seed] = set(splits.labelled_indices.tolist())
    assert chosen[100, 0, 0] == chosen[100, 0, 7]  # the training seed does not matter
    assert chosen[100, 0, 0] != chosen[100, 1, 0]  # the labelled seed does
    assert chosen[100, 0, 0] < chosen[600, 0, 0]  # a larger count keeps the smaller's


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.labelled=5", "5 labels cannot cover 10 classes"),
        ("data.labelled=1290", "need 129 of class 0, but the training split holds only"),
    ],
)
def test_impossible_counts_are_one_line(override, message):
    with pytest.raises(DataError) as error:
        splits_of(override)
    assert message in one_line(error)


def test_labelled_config_values_are_checked():
    assert tiny().data.labelled == "all" and tiny().data.labelled_seed == 0
    config = tiny("data.labelled=100")
    assert pyrovae.Config.from_dict(config.to_dict()) == config
    for bad, message in (
        ("some", "expected an integer or 'all', got 'some'"),
        ("1.5", "expected an integer or 'all', got 1.5"),
        ("0", "must be >= 1, got 0"),
    ):
        with pytest.raises(ConfigError, match="data.labelled: " + message.replace(".", r"\.")):
            tiny(f"data.labelled={bad}")


# ------------------------------------------------------------------ files
def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 2, 3)).astype(np.float32)


def file_splits(path, *overrides: str):
    return splits_of("data.name=file", f"data.path='{path}'", "data.validation_size=4", *overrides)


def test_label_files_load_aligned(tmp_path):
    x, y = images(40), np.arange(40) % 4
    np.savez(
        tmp_path / "dict.npz", train=x[:30], test=x[30:], train_labels=y[:30], test_labels=y[30:]
    )
    torch.save({"data": torch.from_numpy(x), "labels": torch.from_numpy(y)}, tmp_path / "one.pt")
    for name, test_rows in (("dict.npz", slice(30, 40)), ("one.pt", slice(0, 4))):
        splits = file_splits(tmp_path / name, "data.binarize=none")
        assert splits.num_classes == 4
        for images_, labels in (
            (splits.train, splits.train_labels),
            (splits.valid, splits.valid_labels),
            (splits.test, splits.test_labels),
        ):  # each image's label is the one stored beside it
            rows = [int(np.flatnonzero((x == image.numpy()).all((1, 2)))[0]) for image in images_]
            assert labels.tolist() == y[rows].tolist()
        assert torch.equal(splits.test, torch.from_numpy(x[test_rows]))
    whole = np.float64([0, 1, 2, 3] * 10)  # whole-numbered floats are class indices
    np.savez(tmp_path / "floats.npz", data=x, labels=whole)
    assert file_splits(tmp_path / "floats.npz").train_labels.dtype == torch.int64
    np.save(tmp_path / "plain.npy", x)
    assert not file_splits(tmp_path / "plain.npy").has_labels


def bad_label_files(tmp_path) -> list[tuple[str, str]]:
    """(file, expected message) for every way a label file can be wrong."""
    x, y = images(40), np.arange(40) % 4
    cases = {
        "short": (dict(data=x, labels=y[:39]), "labels have shape (39,) but must be"),
        "matrix": (dict(data=x, labels=y.reshape(20, 2)), "have shape (20, 2)"),
        "fraction": (dict(data=x, labels=y + 0.5), "hold 0.5 at datapoint 0; labels must be whole"),
        "nan": (dict(data=x, labels=np.where(y == 1, np.nan, y)), "hold nan at datapoint 1"),
        "bool": (dict(data=x, labels=y > 1), "have dtype torch.bool"),
        "negative": (dict(data=x, labels=y - 1), "negative value -1 at datapoint 0"),
        "gap": (dict(data=x, labels=y * 2), "class 1 (of 0..6) has no training datapoint"),
        "huge": (dict(data=x, labels=np.where(y == 3, 10**12, y)), "the labels reach"),
        "test_only": (
            dict(train=x[:30], test=x[30:], train_labels=y[:30], test_labels=y[30:] + 4),
            "class 4 (of 0..7) has no training datapoint",
        ),
        "half": (dict(train=x[:30], test=x[30:], train_labels=y[:30]), "no test labels"),
        "typo": (dict(train=x[:30], test=x[30:], labels=y), "holds an unknown array 'labels'"),
        "few": (  # 6 labels over 3 classes need 2 of class 2, which has one (datapoint 10)
            dict(data=x, labels=np.where(np.arange(40) == 10, 2, np.minimum(y, 1))),
            "need 2 of class 2, but the training split holds only 1",
        ),
    }
    out = []
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        out.append((str(tmp_path / f"{name}.npz"), message))
    return out


def test_every_bad_label_file_is_one_line(tmp_path):
    for path, message in bad_label_files(tmp_path):
        with pytest.raises(DataError) as error:
            file_splits(path, "data.labelled=6")
        assert message in one_line(error), path


def test_labelled_on_a_dataset_without_labels_is_one_line(tmp_path):
    np.save(tmp_path / "plain.npy", images(40))
    with pytest.raises(DataError) as error:
        file_splits(tmp_path / "plain.npy", "data.labelled=10")
    assert one_line(error) == "data.labelled: dataset 'file' has no labels; remove data.labelled"


def test_bad_labels_on_the_command_line_exit_2_with_one_line(tmp_path):
    (path, message), *_ = bad_label_files(tmp_path)
    result = run_cli(
        "train", "--out", str(tmp_path / "run"), "data.name=file", f"data.path='{path}'"
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"pyrovae: error: data: the file's {message}")


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_label_files_must_count_as_many_labels_as_images(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 8)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n - (prefix == "t10k")) % 10)
    config = tiny("data.name=mnist", f"data.root='{tmp_path}'", "data.download=false").data
    with pytest.raises(DataError) as error:
        load_splits(config, CPU)
    assert "holds 7 test labels for 8 test images" in one_line(error)


# ------------------------------------------------------------------ batches
def test_labelled_batches_cover_the_unlabelled_once_and_cycle_the_labelled():
    splits = splits_of("data.labelled=30")
    train, labels = splits.train.clone(), splits.train_labels.clone()
    hidden = set((splits.train_labels == HIDDEN).nonzero().squeeze(1).tolist())
    kept = splits.labelled_indices.tolist()

    def epoch(seed: int) -> list:
        generator = torch.Generator().manual_seed(seed)
        return list(labelled_batches(splits, 100, generator, CPU))

    batches = epoch(0)
    assert len(batches) == labelled_steps(splits, 100) == math.ceil(len(hidden) / 100)
    unlabelled = torch.cat([u for u, _ in batches]).tolist()
    assert sorted(unlabelled) == sorted(hidden)  # each hidden-label image exactly once
    assert all(len(lab) == 30 for _, lab in batches)  # min(batch_size, labelled)
    assert all(sorted(lab.tolist()) == kept for _, lab in batches)  # 30 = one full pass a step
    again = epoch(0)  # the same generator state draws the same batches
    assert all(torch.equal(a, b) for a, b in zip(sum(again, ()), sum(batches, ()), strict=True))
    assert not torch.equal(epoch(1)[0][0], batches[0][0])
    assert torch.equal(splits.train, train) and torch.equal(splits.train_labels, labels)
    small = list(labelled_batches(splits, 100, torch.Generator(), CPU, labelled_batch_size=7))
    drawn = torch.cat([lab for _, lab in small])
    assert all(len(lab) == 7 for _, lab in small)
    for start in range(0, len(drawn) - 29, 30):  # back-to-back passes over the labelled set
        assert sorted(drawn[start : start + 30].tolist()) == kept


def test_with_every_label_kept_an_epoch_passes_over_the_labelled_images():
    splits = splits_of()
    batches = list(labelled_batches(splits, 100, torch.Generator().manual_seed(0), CPU))
    assert all(len(u) == 0 for u, _ in batches)
    assert sorted(torch.cat([lab for _, lab in batches]).tolist()) == list(range(len(splits.train)))
    assert len(batches) == labelled_steps(splits, 100)


def test_labelled_batches_need_labels(tmp_path):
    np.save(tmp_path / "plain.npy", images(40))
    splits = file_splits(tmp_path / "plain.npy")
    with pytest.raises(DataError) as error:
        labelled_steps(splits, 10)
    assert "needs labels but the dataset has none" in one_line(error)


# ------------------------------------------------------------------ MNIST
def test_mnist_has_sixty_thousand_and_ten_thousand_labels(mnist_dir):
    config = tiny("data.name=mnist", f"data.root='{mnist_dir}'", "data.labelled=100").data
    splits = load_splits(config, CPU)
    assert splits.num_classes == 10
    assert len(splits.train_labels) + len(splits.valid_labels) == 60_000
    assert len(splits.test_labels) == 10_000
    for labels in (splits.valid_labels, splits.test_labels):
        assert labels.min() == 0 and labels.max() == 9
    assert torch.bincount(splits.train_labels[splits.labelled_indices]).tolist() == [10] * 10
