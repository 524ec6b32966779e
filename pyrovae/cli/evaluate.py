"""``pyrovae evaluate``: the test ELBO, importance-sampled log-likelihood, active units, KL per
latent dimension, the accuracy of a classifier q(y|x), and warnings (collapse, not converged)."""

from __future__ import annotations

import argparse
import json
import math

from pyrovae.boundary import SEED_LIMIT, bounded_int
from pyrovae.cli.arguments import add_checkpoint_argument, add_common, add_estimate_arguments
from pyrovae.errors import TrainingError
from pyrovae.evaluation.evaluate import evaluate

__all__ = ["add_parser", "command"]


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``pyrovae evaluate``."""
    parser = commands.add_parser(
        "evaluate", help="test ELBO, importance-sampled log-likelihood and active units of a run"
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    add_common(parser)
    add_estimate_arguments(parser)
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--seed", type=bounded_int(0, SEED_LIMIT), default=0, help="random seed (0)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda[:N] or auto (auto)")
    parser.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """``pyrovae evaluate RUN_DIR``: print the report, or one JSON object with ``--json``."""
    result = evaluate(
        args.run_dir,
        particles=args.particles,
        chunk_size=args.chunk_size,
        limit=args.limit,
        seed=args.seed,
        device=args.device,
        data_root=args.data_dir,
        progress=not args.quiet,
        checkpoint=args.checkpoint,
    )
    if not (math.isfinite(result.elbo) and math.isfinite(result.log_likelihood)):
        raise TrainingError(
            f"evaluate: the run {args.run_dir!r} scores the test data as NaN or infinite"
            f" (ELBO {result.elbo}, log p(x) {result.log_likelihood}); its model is unusable"
        )
    print(json.dumps(result.to_dict()) if args.json else result.summary())
    return 0
