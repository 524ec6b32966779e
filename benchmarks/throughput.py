"""The physical limit: the fraction of this machine's measured matmul throughput that pyrovae's
training and evaluation of the 784-400-50 MNIST VAE reach.

Times a large float32 matrix product (``--size`` square, median of 5) for the machine's GFLOP/s,
then one training epoch of ``pyrovae.train`` (examples/configs/mnist.toml, batch 256, ``trace``)
on ``--train-images`` images and the K-particle evaluation of ``--eval-images`` test images, and
divides the networks' matmul FLOPs by their times. FLOPs counted: 2 * in * out per linear layer
and datapoint (or particle) forward; a training step counts the forward and twice it for the
backward (gradients of inputs and weights); the evaluation runs the decoder once per particle
and the encoder once per datapoint. Elementwise work (activations, log-densities, sampling,
Adam) is not counted, so the fraction is a lower bound on the hardware's use.

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --data-dir ../shared/data --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from timing import (
    add_timing_options,
    file_overrides,
    parse_timing_args,
    pyrovae_epochs,
    write_images,
)

import pyrovae
from pyrovae.evaluation.evaluate import evaluate_model

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(size: int, clock) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(5):
        started = clock()
        a @ b
        times.append(clock() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def linear_flops(sizes: list[int]) -> int:
    """Forward multiply-adds * 2 of a stack of linear layers, per input row."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=2048, help="matmul size (2048)")
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--eval-images", type=int, default=20)
    parser.add_argument("--particles", type=int, default=5000)
    add_timing_options(parser)
    args = parse_timing_args(parser)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_clock else time.perf_counter
    peak = matmul_gflops(args.size, clock)
    config = pyrovae.load_config(
        ROOT / "examples/configs/mnist.toml", [f"data.root={args.data_dir!r}"]
    )
    encoder, decoder = [784, 400, 100], [50, 400, 784]  # the guide's loc and raw scale: 100
    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder) / "images.pt"
        write_images(config, args.train_images, images)
        train_config = config.replace(file_overrides(images, 2, "cpu"))
        epoch = statistics.median(pyrovae_epochs(train_config)[0])
    train_flops = 3 * args.train_images * (linear_flops(encoder) + linear_flops(decoder))
    torch.manual_seed(0)
    vae = pyrovae.build_vae(config.model, (1, 28, 28))
    x = pyrovae.load_splits(config.data, torch.device("cpu")).test[: args.eval_images]
    evaluate_model(vae, x[:2], 100)  # warm up
    started = clock()
    evaluate_model(vae, x, args.particles)
    evaluation = clock() - started
    n = len(x)
    eval_flops = n * linear_flops(encoder) + n * args.particles * linear_flops(decoder)
    unit = "CPU s" if args.cpu_clock else "s"
    print(f"matmul {args.size}^3 float32, {args.threads} threads: {peak:.1f} GFLOP/s")
    print(
        f"training epoch ({args.train_images} images, batch 256): {epoch:.2f} {unit},"
        f" {train_flops / epoch / 1e9:.1f} GFLOP/s = {train_flops / epoch / 1e9 / peak:.0%} of"
        " the matmul"
    )
    print(
        f"evaluation ({n} images, K = {args.particles}): {evaluation:.2f} {unit},"
        f" {eval_flops / evaluation / 1e9:.1f} GFLOP/s ="
        f" {eval_flops / evaluation / 1e9 / peak:.0%} of the matmul"
    )


if __name__ == "__main__":
    main()
