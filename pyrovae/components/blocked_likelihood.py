"""p(x|z) = likelihood(decoder(z)) scored over blocks of rows that stay in the CPU's cache.

At K = 5000 importance samples a pass of the evaluation decodes 25,000 particle-datapoint
pairs: the decoder's output for a 784-pixel likelihood is a (25,000, 784) tensor, 78 MB, and the
likelihood's elementwise log-density (torch's ``binary_cross_entropy_with_logits``: a
log-sigmoid, a fill, a product and two differences) then passes over it half a dozen times,
each pass from main memory. :class:`BlockedLikelihood` runs the decoder and the likelihood's own
``log_prob`` on about a thousand rows at a time (``BLOCK_ELEMENTS`` output values: they stay in
the cores' caches between the matrix product that makes them and the sum that consumes them), so
the elementwise passes cost cache bandwidth, not memory bandwidth, and the large tensor is never
made. The log-density is the likelihood's own distribution's, block by block: no formula is
written here. Everything else (``mean``, ``sample``, ...) comes from the whole distribution,
decoded on first use.

``decoded`` chooses it only where it cannot change a result: without autograd (evaluation and
validation; a training step keeps the one large product its backward pass needs), with a decoder
that is a plain ``nn.Module`` and a likelihood without parameters (calling them later, outside
the program's Pyro context, then makes no ``pyro.param`` site and reads no value the program did
not), and where there is more than one block of work. Only on the CPU and on one thread: on two
threads here every block cost milliseconds of thread wake-ups (``BLOCK_THREADS``), and a GPU
wants the large kernels, its launches multiplying with the blocks (not measured: no GPU here).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro import distributions as dist
from pyro.nn import PyroModule
from torch import nn

__all__ = ["BLOCK_ELEMENTS", "BlockedLikelihood", "decoded"]

#: Decoder output values per block: 2^20 float32 values, 4 MiB. On one thread the evaluation's
#: time is flat from 1 to 4 MiB, 10-15% slower at 0.5 and 8 MiB (results/eval_speed.txt).
BLOCK_ELEMENTS = 2**20

#: Blocks only while torch runs at most this many threads: on two threads each block's parallel
#: regions cost about 9 ms here (2 threads, load 1.4-3: 5.3 s with blocks against 1.9 s without),
#: so the blocks pay only on one (results/eval_speed.txt).
BLOCK_THREADS = 1


class BlockedLikelihood(dist.TorchDistribution):
    """``likelihood(decoder(inputs))``, whose ``log_prob`` runs both on blocks of ``inputs``
    along its first dimension, ``block_elements`` decoder outputs at a time (default
    ``BLOCK_ELEMENTS``, read when the distribution is made).

    ``inputs`` has shape ``(*batch_shape, *input_event)`` with ``input_dims`` trailing event
    dimensions (1 for a latent vector); the likelihood must map the decoder's output for one
    input to a distribution with empty batch shape.
    """

    arg_constraints: dict = {}

    def __init__(
        self,
        likelihood: Callable[[torch.Tensor], dist.TorchDistribution],
        decoder: Callable[[torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        input_dims: int = 1,
        block_elements: int | None = None,
    ) -> None:
        self.likelihood, self.decoder, self.inputs = likelihood, decoder, inputs
        self.input_dims = input_dims
        self.block_elements = BLOCK_ELEMENTS if block_elements is None else block_elements
        batch_shape = inputs.shape[: inputs.dim() - input_dims]
        params = decoder(inputs[(0,) * len(batch_shape)])  # one row: the shapes, the support
        template = likelihood(params)
        if template.batch_shape != torch.Size():
            raise ValueError(
                "BlockedLikelihood: the likelihood of one decoded row has batch shape"
                f" {tuple(template.batch_shape)}, expected ()"
            )
        self._template, self._row_numel, self._full = template, params.numel(), None
        super().__init__(batch_shape, template.event_shape, validate_args=False)

    @property
    def support(self):  # noqa: D102
        return self._template.support

    @property
    def has_rsample(self) -> bool:  # noqa: D102
        return self._template.has_rsample

    @property
    def full(self) -> dist.TorchDistribution:
        """The whole distribution, ``likelihood(decoder(inputs))``, decoded on first use."""
        if self._full is None:
            self._full = self.likelihood(self.decoder(self.inputs))
        return self._full

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = self.batch_shape + self.event_shape
        if not self.batch_shape or torch.broadcast_shapes(value.shape, shape) != shape:
            return self.full.log_prob(value)  # value adds batch dimensions: score it whole
        per_index = math.prod(self.batch_shape[1:]) * self._row_numel
        step = max(1, self.block_elements // max(1, per_index))
        if step >= self.batch_shape[0]:
            return self.full.log_prob(value)
        # x is sliced where it has one entry per index of the first dimension, else broadcast
        sliced = value.dim() == len(shape) and value.shape[0] != 1
        return torch.cat(
            [
                self.likelihood(self.decoder(self.inputs[start : start + step])).log_prob(
                    value[start : start + step] if sliced else value
                )
                for start in range(0, self.batch_shape[0], step)
            ]
        )

    def expand(self, batch_shape, _instance=None) -> BlockedLikelihood:
        batch_shape = torch.Size(batch_shape)
        event = self.inputs.shape[self.inputs.dim() - self.input_dims :]
        return BlockedLikelihood(
            self.likelihood,
            self.decoder,
            self.inputs.expand(batch_shape + event),
            self.input_dims,
            self.block_elements,
        )

    @property
    def mean(self) -> torch.Tensor:
        return self.full.mean

    @property
    def mode(self) -> torch.Tensor:
        return self.full.mode

    @property
    def variance(self) -> torch.Tensor:
        return self.full.variance

    def sample(self, sample_shape=()) -> torch.Tensor:
        return self.full.sample(sample_shape)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        return self.full.rsample(sample_shape)

    def entropy(self) -> torch.Tensor:
        return self.full.entropy()


def decoded(
    likelihood: nn.Module,
    decoder: nn.Module,
    inputs: torch.Tensor,
    input_dims: int = 1,
    block_elements: int | None = None,
) -> dist.TorchDistribution:
    """``likelihood(decoder(inputs))``: a :class:`BlockedLikelihood` where that is safe and
    worth it (no autograd, a CPU tensor, at most ``BLOCK_THREADS`` torch threads, a plain
    decoder, a likelihood without parameters, more than one block of work), else the
    distribution itself."""
    rows = math.prod(inputs.shape[: inputs.dim() - input_dims])
    blocked = (
        not torch.is_grad_enabled()
        and inputs.device.type == "cpu"
        and torch.get_num_threads() <= BLOCK_THREADS
        and not isinstance(decoder, PyroModule)
        and next(likelihood.parameters(), None) is None
        and rows > 1
    )
    if blocked:
        candidate = BlockedLikelihood(likelihood, decoder, inputs, input_dims, block_elements)
        if candidate._row_numel * rows > 2 * candidate.block_elements:
            return candidate
    return likelihood(decoder(inputs))
