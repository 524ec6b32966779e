"""CUDA and multi-process training (torch.distributed, launched by torchrun).

The multi-process tests start real processes with the gloo backend on the CPU: ``torchrun``
for the launches users run, and two hand-started ranks (``RANK``/``WORLD_SIZE``/``MASTER_*``
set by the test) where torchrun's own supervision would hide what pyrovae does when a rank is
lost. Test-only components (a point-mass guide for noise-free comparisons, a network that kills
or freezes one rank) live in ``tests/ddp_components.py`` and are loaded in the children only.
CUDA tests skip on a machine without a GPU.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pyro
import pytest
import torch
from conftest import REPO, run_cli

import pyrovae
from pyrovae.components.programs.vae import build_vae
from pyrovae.config import Config, TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.elbo import negative_elbo
from pyrovae.inference.estimators import meanfield
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.directory import read_metrics
from pyrovae.training.distributed import (
    BACKENDS,
    DistributedError,
    ELBOLoss,
    Group,
    Launch,
    is_main_process,
    launch_from_env,
    session,
)

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "ddp_worker.py"
COMPONENTS = TESTS / "ddp_components.py"

#: Small, fast runs on the digits: 1294 training images; a batch of 99 leaves a last batch of 7
#: (shares of 4 and 3), so uneven shares are exercised every epoch.
SMALL = [
    "train.device=cpu",
    "train.epochs=2",
    "train.batch_size=99",
    "model.encoder=mlp",
    "model.encoder.hidden=[32]",
    "model.decoder=mlp",
    "model.decoder.hidden=[32]",
]
#: The point-mass guide makes the ELBO free of Monte Carlo noise (trace estimator: log q = 0).
NOISE_FREE = ["model.guide=ddp_point", "train.estimator=trace", *SMALL]

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def _torchrun(*args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", *args]
    return subprocess.run(
        command, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------- one process
def test_launch_is_read_from_torchruns_variables():
    assert launch_from_env({}) is None
    assert launch_from_env({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}
    assert launch_from_env(env) == Launch(rank=3, world_size=4, local_rank=1)
    with pytest.raises(ConfigError, match="but RANK is not set; start multi-process runs with"):
        launch_from_env({"WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="LOCAL_RANK is 'x', not a whole number"):
        launch_from_env({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"})
    with pytest.raises(ConfigError, match="RANK 2 is outside 0..1"):
        launch_from_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})
    assert BACKENDS == {"cpu": "gloo", "cuda": "nccl"}


def test_only_rank_zero_is_the_main_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    assert Group(torch.device("cpu"), rank=0, world_size=2).is_main
    assert not Group(torch.device("cpu"), rank=1, world_size=2).is_main


def test_shares_partition_every_batch():
    batch = torch.randperm(1000)[:23]
    shares = [Group(torch.device("cpu"), r, 4).shard(batch) for r in range(4)]
    assert sorted(torch.cat(shares).tolist()) == sorted(batch.tolist())
    assert sorted(len(s) for s in shares) == [5, 6, 6, 6]  # differ by at most one
    # The gradient of sum_r (W / B) * (share r's summed loss), averaged over W ranks by DDP,
    # is the gradient of the mean over the B datapoints of the batch.
    single = Group(torch.device("cpu"))
    assert single.loss_scale(23) == 1 / 23
    assert Group(torch.device("cpu"), 0, 4).loss_scale(23) * sum(map(len, shares)) / 4 == 1
    assert torch.equal(single.shard(batch), batch)


def test_an_empty_share_still_reaches_every_parameter():
    # A last batch smaller than the number of ranks leaves some rank nothing: its loss must be
    # zero and still give every parameter a (zero) gradient, or DDP's backward would stall.
    vae = build_vae(Config().model, (1, 8, 8))
    loss = ELBOLoss(vae, meanfield())(torch.zeros(0, 1, 8, 8))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in vae.parameters())


def test_the_timeout_must_be_positive():
    with pytest.raises(ConfigError, match=r"train.dist_timeout: must be > 0.0"):
        pyrovae.load_config(None, ["train.dist_timeout=0"])


def test_a_launch_without_a_rendezvous_address_is_a_config_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with (
        pytest.raises(ConfigError, match="MASTER_ADDR expected, but not set; launch with torchrun"),
        session(TrainConfig(device="cpu")),
    ):
        pass


def test_a_rank_that_never_joins_is_reported_after_the_timeout(monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    config = pyrovae.load_config(None, ["train.device=cpu", "train.dist_timeout=2"])
    with (
        pytest.raises(DistributedError, match=r"rank 0 of 2: the other processes did not join"),
        session(config.train),
    ):
        pass
    assert not torch.distributed.is_initialized()


def test_ranks_other_than_zero_draw_their_own_stream(monkeypatch):
    seeded: list[int] = []
    monkeypatch.setattr(pyro, "set_rng_seed", seeded.append)
    Group(torch.device("cpu")).seed_sampling(5)
    Group(torch.device("cpu"), 0, 3).seed_sampling(5)  # rank 0 keeps its (restored) stream
    Group(torch.device("cpu"), 2, 3).seed_sampling(5)
    Group(torch.device("cpu"), 1, 2).seed_sampling(2**32 - 1)  # NumPy takes seeds < 2**32
    assert seeded == [7, 0]


def test_the_finite_check_covers_every_value():
    group = Group(torch.device("cpu"))
    assert group.all_finite(torch.tensor([1.0, -2.0]))
    assert not group.all_finite(torch.tensor([1.0, math.inf]))
    assert not group.all_finite(torch.tensor([math.nan, 0.0]))


# ------------------------------------------------------------ two processes
def _worker(out: Path, *overrides: str, nproc: int = 1) -> None:
    """``ddp_worker.py`` alone or under torchrun, writing into ``out``."""
    out.mkdir(parents=True)
    if nproc == 1:
        result = subprocess.run(
            [sys.executable, str(WORKER), str(out), *overrides],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
    else:
        result = _torchrun(str(WORKER), str(out), *overrides, nproc=nproc)
    assert result.returncode == 0, result.stderr[-12000:]


@pytest.fixture(scope="module")
def noise_free_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The worker on ``NOISE_FREE`` (2 epochs) in one process (``one``) and on two (``two``)."""
    root = tmp_path_factory.mktemp("noise-free")
    _worker(root / "one", *NOISE_FREE)
    _worker(root / "two", *NOISE_FREE, nproc=2)
    return root / "one", root / "two"


def test_two_processes_match_one_on_the_same_global_batches(noise_free_runs):
    """Same data order and binarization, noise-free ELBO: the two-process run follows the
    single process step for step. Tolerances: the ranks' gradients are summed in another
    order than one process sums its batch, so float32 results differ by ~1e-7 of their size
    (measured: gradients 2e-7, parameters 3e-8 after 28 Adam steps); 1e-5 is far below what a
    wrong loss scale or a wrong share weighting would change (percent-level or more)."""
    one, two = noise_free_runs
    reference = torch.load(one / "single.pt")
    ranks = [torch.load(two / f"{r}.pt") for r in (0, 1)]
    for part in ("gradient", "params"):
        for key, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][key]), f"{part} {key} differs across ranks"
            torch.testing.assert_close(value, reference[part][key], rtol=0, atol=1e-5)
    for rank in ranks:
        for metric in ("train_loss", "valid_loss"):
            assert rank[metric] == pytest.approx(reference[metric], rel=1e-6)
    # Every rank records rank 0's epoch times, so a time budget (train.max_seconds) stops
    # them all after the same epoch.
    assert ranks[0]["epoch_seconds"] == ranks[1]["epoch_seconds"]
    assert ranks[0]["epoch_seconds"] == [m["epoch_seconds"] for m in read_metrics(two / "run")]
    assert len(read_metrics(two / "run")) == 2  # rank 0 alone wrote the metrics
    assert not any((two / "run").glob(".*.tmp"))


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


def test_a_run_resumes_on_another_number_of_processes(noise_free_runs, tmp_path):
    """Noise-free runs: 2 epochs on two processes resumed for a 3rd in one, and 2 epochs in one
    resumed for a 3rd on two (torchrun), both end where 3 uninterrupted epochs end: every rank
    took up the weights, Adam's state, the step and the data generator. Tolerance 1e-5 as in
    the test above (float rounding of gradients summed over other shares)."""
    one, two = noise_free_runs
    reference = tmp_path / "reference"
    plugin = ["--plugin", str(COMPONENTS), "--quiet"]
    done = run_cli("train", *plugin, "--out", str(reference), *NOISE_FREE, "train.epochs=3")
    assert done.returncode == 0, done.stderr[-12000:]
    two_then_one, one_then_two = tmp_path / "two-then-one", tmp_path / "one-then-two"
    shutil.copytree(two / "run", two_then_one)
    shutil.copytree(one / "run", one_then_two)
    resumed = run_cli("train", *plugin, "--resume", str(two_then_one), "train.epochs=3")
    assert resumed.returncode == 0, resumed.stderr[-12000:]
    resumed = _torchrun(
        "-m", "pyrovae", "train", *plugin, "--resume", str(one_then_two), "train.epochs=3"
    )
    assert resumed.returncode == 0, resumed.stderr[-12000:]
    assert resumed.stdout.count("trained vae:") == 1

    expected = read_metrics(reference)
    for run_dir, before in ((two_then_one, two), (one_then_two, one)):
        metrics = read_metrics(run_dir)
        assert [m["step"] for m in metrics] == [m["step"] for m in expected] == [14, 28, 42]
        assert metrics[:2] == read_metrics(before / "run")  # the epochs before, kept as written
        for key in ("train_loss", "valid_loss"):
            assert metrics[2][key] == pytest.approx(expected[2][key], rel=1e-5)
        for key, value in _params(reference).items():
            torch.testing.assert_close(_params(run_dir)[key], value, rtol=0, atol=1e-5)
        saved = tomllib.loads((run_dir / "config.toml").read_text())  # names test components
        assert saved["train"]["epochs"] == 3


def test_a_loss_that_is_not_finite_on_one_rank_is_skipped_by_both(tmp_path):
    """Rank 1's loss is NaN at its calls 2 and 5 with finite gradients (a constant NaN factor):
    both ranks skip those two steps, and their parameters stay equal. Were rank 0 to decide on
    its own loss, it would step where rank 1 does not and the ranks would drift apart."""
    likelihood = "model.likelihood={name='ddp_rank_nan', rank=1, calls=[2, 5]}"
    out = tmp_path / "out"
    _worker(out, *SMALL, "train.epochs=1", likelihood, nproc=2)
    ranks = [torch.load(out / f"{r}.pt") for r in (0, 1)]
    assert ranks[0]["skipped_steps"] == ranks[1]["skipped_steps"] == [2]
    for key, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][key]), key
    adam = load_checkpoint(out / "run" / "checkpoint.pt")["optimizer"]["state"]
    assert {int(s["step"]) for s in adam.values()} == {math.ceil(1294 / 99) - 2}
    assert all(torch.isfinite(v).all() for v in ranks[0]["params"].values())


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``torchrun -m pyrovae train`` with the default model, on two processes."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = _torchrun("-m", "pyrovae", "train", "--quiet", "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stderr[-12000:]
    return out, result


def test_a_user_program_with_two_latent_layers_trains_on_two_processes(tmp_path):
    """A program other than the one-site VAE under torchrun, with ``dreg``: both ranks train
    it, rank 0 writes the run, and one process evaluates it."""
    out = tmp_path / "run"
    program = "model.program={name='two_layer', latent1=4, latent2=2, hidden1=[16], hidden2=[8]}"
    result = _torchrun(
        "-m", "pyrovae", "train", "--quiet", "--out", str(out), program,
        "train.estimator={name='dreg', particles=3}", "train.device=cpu", "train.epochs=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-12000:]
    evaluation = pyrovae.evaluate(out, particles=10, limit=20)
    assert math.isfinite(evaluation.log_likelihood)


def test_a_two_process_run_is_loaded_and_evaluated_by_one(two_process_run):
    out, result = two_process_run
    assert result.stdout.count("trained vae:") == 1  # rank 0 alone reports
    config, vae, checkpoint = pyrovae.load_run(out, checkpoint="last")
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    assert checkpoint["step"] == 2 * math.ceil(1294 / 99)
    assert config.train.batch_size == 99  # the global batch, whatever the number of processes
    metrics = read_metrics(out)
    assert [m["epoch"] for m in metrics] == [1, 2]
    # One process scores the validation split as the two did together: the same bound, up to
    # the z draws. Tolerance 0.3 nats: repeated one-particle evaluations of such a model on
    # these 143 images spread by ~0.04 nats (measured), so 0.3 is ~7 standard deviations.
    valid = pyrovae.load_splits(config.data, torch.device("cpu")).valid
    pyro.set_rng_seed(1)
    assert negative_elbo(vae, valid) == pytest.approx(metrics[-1]["valid_loss"], abs=0.3)
    sampled = run_cli("sample", str(out), "--count", "16", "--out", str(out / "new.png"))
    assert sampled.returncode == 0, sampled.stderr
    assert (out / "new.png").stat().st_size > 0


def test_a_two_process_run_resumes_in_one_process(two_process_run, tmp_path):
    """``pyrovae train --resume RUN_DIR train.epochs=4`` in a single process goes on with the
    checkpoint of the two-process command-line run (default model, Monte Carlo noise)."""
    out, _ = two_process_run
    shutil.copytree(out, tmp_path / "run")
    resumed = run_cli("train", "--quiet", "--resume", str(tmp_path / "run"), "train.epochs=4")
    assert resumed.returncode == 0, resumed.stderr[-12000:]
    assert "valid_loss" in resumed.stdout and "after 4 epochs" in resumed.stdout
    metrics = read_metrics(tmp_path / "run")
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[:2] == read_metrics(out)
    steps = math.ceil(1294 / 99)
    assert [m["step"] for m in metrics] == [steps, 2 * steps, 3 * steps, 4 * steps]
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (checkpoint["epoch"], checkpoint["step"]) == (4, 4 * steps)
    # Training went on from the checkpoint rather than starting over: after 4 epochs the bound
    # is no worse than after 2. Tolerance 0.3 nats: the spread of one-particle evaluations
    # (see above); a restart from scratch would be tens of nats worse after its first epochs.
    assert metrics[2]["valid_loss"] < metrics[1]["valid_loss"] + 0.3


def _two_hand_started_ranks(out: Path, mode: str, timeout: float) -> tuple[int, str, int]:
    """Rank 1 exits abruptly or hangs at its 3rd encoder call; returns rank 0's exit status and
    error output, and the seconds rank 0 ran. Rank 1 is killed once rank 0 has stopped."""
    env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    args = [sys.executable, "-m", "pyrovae", "train", "--plugin", str(COMPONENTS), "--quiet"]
    args += ["--out", str(out), "model.encoder=ddp_faulty_mlp", f"model.encoder.mode={mode}"]
    args += ["train.device=cpu", f"train.dist_timeout={timeout}"]
    ranks = [
        subprocess.Popen(
            args,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    started = time.monotonic()
    try:
        _, stderr = ranks[0].communicate(timeout=120)  # a hang fails the test here, not forever
        return ranks[0].returncode, stderr, time.monotonic() - started
    finally:
        for process in ranks:
            process.kill()
            process.communicate()


@pytest.mark.timeout(180)
def test_a_rank_that_dies_stops_the_others_with_an_error(tmp_path):
    status, stderr, _ = _two_hand_started_ranks(tmp_path / "run", "exit", timeout=20)
    assert status == 2, stderr[-12000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("pyrovae: error: rank 0 of 2: lost contact with the other processes")
    assert "train.dist_timeout = 20 s" in last
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.timeout(180)
def test_a_rank_that_hangs_stops_the_others_after_the_timeout(tmp_path):
    status, stderr, seconds = _two_hand_started_ranks(tmp_path / "run", "hang", timeout=8)
    assert status == 2, stderr[-12000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("pyrovae: error: rank 0 of 2: lost contact with the other processes")
    assert "Timed out" in last  # gloo's own words: the collective waited out the timeout
    assert seconds >= 8  # rank 0 waited the timeout before giving up, not less


# ------------------------------------------------------------------------ CUDA
def _cuda_config(**overrides: str) -> Config:
    items = {"train.device": "cuda", "train.epochs": "2", **overrides}
    return pyrovae.load_config(None, [f"{k}={v}" for k, v in items.items()])


@no_cuda
def test_cuda_training_keeps_every_draw_on_the_device(tmp_path):
    config = _cuda_config()
    # The model is built on the CPU (its initialization draws from the CPU generator) and then
    # moved; after that, no draw may touch the CPU generator: batches, binarization and Pyro's
    # samples all come from CUDA generators.
    torch.manual_seed(config.train.seed)
    build_vae(config.model, (1, 8, 8))
    cpu_state_after_init = torch.get_rng_state()
    run = pyrovae.train(config, out=tmp_path / "gpu", quiet=True)
    assert torch.equal(torch.get_rng_state(), cpu_state_after_init)
    assert all(p.device.type == "cuda" for p in run.model.parameters())
    # Same model on the CPU: the runs differ only in their random draws. Tolerance 1 nat:
    # 2-epoch runs with different seeds spread by ~0.15 nats (measured on the CPU).
    cpu = pyrovae.train(
        config.replace(["train.device=cpu"]), out=tmp_path / "cpu", quiet=True
    ).metrics[-1]["valid_loss"]
    assert run.metrics[-1]["valid_loss"] == pytest.approx(cpu, abs=1.0)
    _, loaded, _ = pyrovae.load_run(tmp_path / "gpu")  # a GPU run loads on the CPU
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, run.model.state_dict()[key].cpu())


@no_cuda
def test_cuda_training_is_deterministic(tmp_path):
    config = _cuda_config()
    first = pyrovae.train(config, out=tmp_path / "a", quiet=True)
    second = pyrovae.train(config, out=tmp_path / "b", quiet=True)
    for a, b in zip(first.metrics, second.metrics, strict=True):
        assert (a["train_loss"], a["valid_loss"]) == (b["train_loss"], b["valid_loss"])
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than two CUDA devices here")
def test_two_gpus_match_one_gpu(tmp_path):
    """As the gloo test, on nccl. Tolerance 1e-4: cuBLAS may sum in other orders per shape."""
    gpu = [arg.replace("train.device=cpu", "train.device=cuda") for arg in NOISE_FREE]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    single = subprocess.run(
        [sys.executable, str(WORKER), str(one), *gpu], env=_env(), capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr[-12000:]
    multi = _torchrun(str(WORKER), str(two), *gpu)
    assert multi.returncode == 0, multi.stderr[-12000:]
    reference = torch.load(one / "single.pt")
    ranks = [torch.load(two / f"{r}.pt") for r in (0, 1)]
    for key, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][key])
        torch.testing.assert_close(value, reference["params"][key], rtol=0, atol=1e-4)
