"""Multi-process training on ``torch.distributed``, launched by ``torchrun``.

``torchrun`` starts one process per device and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). ``session`` reads
them, starts the process group (gloo on the CPU, nccl on GPUs, each rank on ``cuda:LOCAL_RANK``)
with ``train.dist_timeout`` as its timeout, and hands the training loop a ``Group``: which share
of each batch is this rank's, how to sum metrics over ranks, and the loss wrapped in
``DistributedDataParallel``. Without those variables (or with ``WORLD_SIZE=1``) the group is a
single process and every method is the identity, so one code path serves both.

How a run is split (the README's "Several processes" section says the same):

- ``train.batch_size`` is the global batch. Every rank draws the same permutation of the
  training set (the permutation generator is seeded with ``train.seed`` on every rank) and takes
  the rank-strided share ``batch[rank::world_size]`` of each batch, so the ranks together see
  exactly the batches a single process would see.
- Dynamic binarization draws the whole epoch from that shared stream too: the images of a rank's
  share are disjoint draws, and the epoch's data equal a single process's whatever the number of
  ranks. Pyro's own draws (z and the particles) come from torch's global generator: rank 0
  keeps a single process's stream, rank r > 0 is reseeded with ``train.seed + r``, so every
  rank draws different noise.
- Each rank's loss is its share's summed negative ELBO times ``world_size / len(batch)``: DDP
  averages gradients over ranks, so the step is the gradient of the mean over the global batch,
  the same as one process on that batch, even when the shares differ in size by one.
- A step whose loss or gradient is not finite on some rank is skipped by every rank
  (``step_guard.StepGuard`` decides with ``Group.all_finite``), so the ranks never diverge.
- Epoch metrics are sums over ranks (``all_reduce``) divided by global counts; validation is
  split across ranks the same way. Rank 0 alone writes the run directory, the metrics, the
  checkpoints and the pictures (``Group.on_main``: its errors are raised on every rank). The
  checkpoint holds the plain program's state dict and rank 0's generators: a run trained on N
  processes is loaded, evaluated or resumed by any number (``resume`` says what is bit-exact).
- A collective that waits longer than ``train.dist_timeout`` seconds (a rank died or hangs)
  fails, and pyrovae stops with a ``DistributedError`` instead of hanging.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyro
import torch
import torch.distributed as dist
from pyro.infer import ELBO
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pyrovae.components.plain_parameters import plain_parameters
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError, PyrovaeError, TrainingError, first_line
from pyrovae.inference.estimators import differentiable_loss
from pyrovae.inference.latent_weight import weight_latents
from pyrovae.runs.directory import resolve_device

__all__ = [
    "BACKENDS",
    "DistributedError",
    "Group",
    "ELBOLoss",
    "launch_from_env",
    "is_main_process",
    "label_weights",
    "session",
]

#: The process-group backend for each device type.
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}

#: Words that mark an error raised by a collective operation or the rendezvous store.
_COLLECTIVE_MARKERS = ("gloo", "nccl", "c10d", "processgroup", "connection reset", "timed out")

T = TypeVar("T")


class DistributedError(TrainingError):
    """The processes of a multi-process run lost each other: one died, hung or never started."""


@dataclass(frozen=True)
class Launch:
    """A process's place in a torchrun launch, read from the environment."""

    rank: int
    world_size: int
    local_rank: int


def launch_from_env(environ: dict[str, str] | None = None) -> Launch | None:
    """The torchrun launch this process belongs to, or None for a plain single process.

    ``WORLD_SIZE`` unset or 1 is a single process; otherwise ``RANK`` and ``LOCAL_RANK`` must
    be set too, as torchrun does.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = env.get(name)
        if text is None or not text.strip().isdigit():
            found = "not set" if text is None else f"{text!r}, not a whole number"
            raise ConfigError(
                f"environment: WORLD_SIZE is set but {name} is {found}; start multi-process"
                " runs with torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK"
            )
        values[name] = int(text)
    launch = Launch(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if not 0 <= launch.rank < launch.world_size:
        raise ConfigError(
            f"environment: RANK {launch.rank} is outside 0..{launch.world_size - 1} (WORLD_SIZE)"
        )
    return None if launch.world_size == 1 else launch


def is_main_process() -> bool:
    """True unless this process is a torchrun rank other than 0 (the one that prints)."""
    return os.environ.get("RANK", "0").strip() in ("0", "")


class ELBOLoss(nn.Module):
    """The negative ELBO of ``program`` summed over a batch, as a module that owns the
    parameters, with the latent sites weighted by ``kl_weight`` (``weight_latents``).

    Pyro's ``ELBOModule`` holds ``program.model`` and ``program.guide``, which are methods, so
    its ``parameters()`` is empty and DDP would have nothing to synchronize; this module holds
    the program itself. An empty batch (a rank's share of a last batch smaller than the number
    of ranks) gives a zero that still reaches every parameter: DDP needs every rank in every
    backward pass.
    """

    def __init__(self, program: nn.Module, elbo: ELBO) -> None:
        super().__init__()
        self.program = program
        self.elbo = elbo
        self._plain = plain_parameters(program)  # the optimizer holds the parameters: no sites

    def forward(
        self,
        x: torch.Tensor,
        kl_weight: float = 1.0,
        y: torch.Tensor | None = None,
        labelled_fraction: float | None = None,
    ) -> torch.Tensor:
        """Minus the bound summed over ``x``. With labels ``y`` (a program that uses labels;
        -1 marks a hidden label) see ``_labelled_loss``; ``labelled_fraction`` is the share of
        the training set whose label is kept."""
        if len(x) == 0:
            return sum(p.sum() for p in self.program.parameters()) * 0.0
        with self._plain:
            return self._loss(x, kl_weight, y, labelled_fraction)

    def _loss(
        self,
        x: torch.Tensor,
        kl_weight: float,
        y: torch.Tensor | None,
        labelled_fraction: float | None = None,
    ) -> torch.Tensor:
        model = weight_latents(self.program.model, kl_weight)
        guide = weight_latents(self.program.guide, kl_weight)
        if y is None:
            return differentiable_loss(self.elbo, model, guide, x)
        return self._labelled_loss(model, guide, x, y, labelled_fraction)

    def _labelled_loss(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        x: torch.Tensor,
        y: torch.Tensor,
        labelled_fraction: float | None,
    ) -> torch.Tensor:
        """The labelled rows (``y >= 0``) scored with y observed, the others with y unobserved,
        plus the program's ``auxiliary_loss`` on the labelled rows scaled by ``len(x) /
        labelled``: alpha times the labelled rows' mean -log q(y|x) per datapoint.

        The bounds' row weights are ``label_weights``: every row 1 (the batch's sum), or, when
        the program's ``weighting`` is ``"dataset"`` and ``labelled_fraction`` f = N_l / N is
        given, ``len(x) f / labelled`` for a labelled row and ``len(x) (1 - f) / unlabelled``
        for an unlabelled one, so that the loss divided by ``len(x)`` is an unbiased estimate
        of Kingma et al.'s objective per datapoint, (sum over the labelled training images of
        -L(x, y) + sum over the unlabelled of -U(x)) / N + alpha E_labelled[-log q(y|x)]."""
        known = y >= 0
        labelled = int(known.sum())
        unlabelled_weight, labelled_weight = label_weights(
            len(x), labelled, getattr(self.program, "weighting", "batch"), labelled_fraction
        )
        loss = x.new_zeros(())
        if labelled < len(x):
            unlabelled = differentiable_loss(self.elbo, model, guide, x[~known])
            loss = loss + unlabelled * unlabelled_weight
        if labelled:
            x_known, y_known = x[known], y[known]
            bound = differentiable_loss(self.elbo, model, guide, x_known, y_known)
            loss = loss + bound * labelled_weight
            auxiliary = getattr(self.program, "auxiliary_loss", None)
            if auxiliary is not None:
                loss = loss + auxiliary(x_known, y_known) * (len(x) / labelled)
        return loss


def label_weights(
    rows: int, labelled: int, weighting: str, labelled_fraction: float | None
) -> tuple[float, float]:
    """The weights of an unlabelled and of a labelled row's bound in a batch of ``rows`` with
    ``labelled`` labelled ones: 1 and 1 (``weighting = "batch"``, or without the fraction),
    else ``rows (1 - f) / unlabelled`` and ``rows f / labelled`` for ``f = labelled_fraction``
    (``"dataset"``): the unlabelled rows' mean then weighs 1 - f and the labelled rows' f, their
    shares of the training set. A batch of one kind only (a rank's share of a small batch under
    torchrun) keeps weights 1."""
    unlabelled = rows - labelled
    if weighting != "dataset" or labelled_fraction is None or not (labelled and unlabelled):
        return 1.0, 1.0
    return rows * (1 - labelled_fraction) / unlabelled, rows * labelled_fraction / labelled


@dataclass(frozen=True)
class Group:
    """This process's view of the run: its rank among ``world_size`` and its device."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    timeout: float = field(default=0.0, compare=False)
    #: The process group of this object's own collectives (``session`` says why it is not the
    #: default group, which DDP uses); None: the default group.
    control: Any = field(default=None, compare=False, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's share of a batch: every ``world_size``-th index from ``rank`` on."""
        return indices[self.rank :: self.world_size] if self.distributed else indices

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over all ranks (a new tensor; ``value`` is left alone)."""
        total = value.detach().clone()
        if self.distributed:
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.control)
        return total

    def main_value(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (one ``all_reduce``), so that a decision made from
        it (the time budget) is the same on all."""
        if not self.distributed:
            return value
        mine = value if self.is_main else 0.0
        return float(self.sum(torch.tensor(mine, dtype=torch.float64, device=self.device)))

    def all_finite(self, values: torch.Tensor) -> bool:
        """Whether ``values`` are finite on every rank (one ``all_reduce``), so that all ranks
        skip a step or take it together."""
        bad = (~torch.isfinite(values.detach())).any().to(torch.float32)
        return not bool(self.sum(bad) > 0)

    def mean(self, fn: Callable[[torch.Tensor], float], x: torch.Tensor) -> float:
        """The mean over all of ``x`` of ``fn``, a per-datapoint mean; each rank scores a share."""
        share = x[self.rank :: self.world_size]
        local = fn(share) * len(share) if len(share) else 0.0
        total = self.sum(torch.tensor(local, dtype=torch.float64, device=self.device))
        return float(total) / len(x)

    def loss_module(self, elbo: ELBO, program: nn.Module) -> nn.Module:
        """``x -> summed negative ELBO``; under DDP when the run has several processes."""
        module = ELBOLoss(program, elbo)
        if not self.distributed:
            return module
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def loss_scale(self, global_batch: int) -> float:
        """The factor taking a rank's summed loss to its part of the global batch mean; DDP
        divides the summed gradients by ``world_size``, which this factor undoes."""
        return self.world_size / global_batch

    def seed_sampling(self, seed: int) -> None:
        """Seed torch's global generator (Pyro's draws) with ``seed + rank`` on every rank but
        rank 0, whose stream is the one a single process would draw (and the one checkpoints
        hold). Wraps below 2**32, the range NumPy's seed (also set here) accepts."""
        if self.rank > 0:
            pyro.set_rng_seed((seed + self.rank) % 2**32)

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 alone and give its result to every rank; a ``PyrovaeError``
        raised there is raised on every rank."""
        if not self.distributed:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box = [(True, fn())]
            except PyrovaeError as error:
                box = [(False, error)]
        dist.broadcast_object_list(box, src=0, group=self.control, device=self.device)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.control)


def _rank_device(device: torch.device, launch: Launch) -> torch.device:
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise ConfigError(
            f"train.device: LOCAL_RANK is {launch.local_rank} but this machine has {count}"
            f" GPU(s); start at most {count} processes per node (--nproc_per_node)"
        )
    if device.index is not None and device.index != launch.local_rank:
        raise ConfigError(
            f"train.device: under torchrun each process uses cuda:LOCAL_RANK (here"
            f" cuda:{launch.local_rank}), not {device}; pass --device cuda or auto"
        )
    device = torch.device("cuda", launch.local_rank)
    torch.cuda.set_device(device)
    return device


def _is_collective_failure(error: BaseException) -> bool:
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(m in text for m in _COLLECTIVE_MARKERS)


def _start(backend: str, launch: Launch, timeout: float, device: torch.device) -> None:
    try:
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout),
            device_id=device if device.type == "cuda" else None,
        )
    except ValueError as error:  # env:// rendezvous without MASTER_ADDR / MASTER_PORT
        raise ConfigError(
            f"environment: cannot start the process group: {first_line(error)}; launch"
            " with torchrun, which sets MASTER_ADDR and MASTER_PORT"
        ) from None
    except Exception as error:
        if not _is_collective_failure(error):
            raise
        raise DistributedError(
            f"rank {launch.rank} of {launch.world_size}: the other processes did not join"
            f" within train.dist_timeout = {timeout:g} s ({first_line(error)}); check that"
            " every rank started and can reach MASTER_ADDR:MASTER_PORT"
        ) from None


@contextmanager
def session(config: TrainConfig) -> Iterator[Group]:
    """The ``Group`` of one training run: starts (and at the end destroys) the process group
    when torchrun launched several processes, or reuses one the caller started.

    A collective that fails (a rank died, or waited longer than ``train.dist_timeout``) is
    raised as a ``DistributedError`` naming this rank.

    The ``Group``'s own collectives (metrics, the finite verdict, rank 0's results, the final
    barrier) run on a process group of their own, destroyed here. The default group serves
    DDP, and DDP keeps it (and its worker threads) alive after ``destroy_process_group``: a
    worker that releases a tensor created in Python once the interpreter is shutting down
    aborts the process ("terminate called without an active exception": 2 of ~130
    two-process runs on a loaded machine before this group existed, none of 75 since).
    Destroying the control group joins its workers while Python is alive, and the tensors
    DDP's group holds at the end are its gradient buckets, made in C++.
    """
    device = resolve_device(config.device)
    launch = launch_from_env()
    if launch is None and not dist.is_initialized():
        yield Group(device)
        return
    owned = not dist.is_initialized()
    if launch is None:  # the caller started a process group without torchrun's variables
        rank = dist.get_rank()
        launch = Launch(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    device = _rank_device(device, launch)
    if owned:
        _start(BACKENDS[device.type], launch, config.dist_timeout, device)
    elif (dist.get_rank(), dist.get_world_size()) != (launch.rank, launch.world_size):
        raise ConfigError(
            "environment: the process group already started does not match RANK and WORLD_SIZE"
        )
    control = None
    try:
        control = dist.new_group(timeout=datetime.timedelta(seconds=config.dist_timeout))
        group = Group(device, launch.rank, launch.world_size, config.dist_timeout, control)
        yield group
        group.barrier()  # every rank returns once rank 0 has written the whole run directory
    except PyrovaeError:
        raise
    except Exception as error:
        if not _is_collective_failure(error):
            raise
        raise DistributedError(
            f"rank {launch.rank} of {launch.world_size}: lost contact with the other processes"
            f" ({first_line(error)}); another rank died or waited longer than"
            f" train.dist_timeout = {config.dist_timeout:g} s: read its output above"
        ) from None
    finally:
        if control is not None:
            dist.destroy_process_group(control)
        if owned:
            dist.destroy_process_group()
