"""``pyrovae compare``: train variants of one base config with the same seed and budget, evaluate
each on the test split, and write a Markdown and a CSV table and plots.

A variants file is TOML with one table per variant, each a partial config merged into the base::

    [variants.iwae5]
    train.estimator = { name = "iwae", particles = 5 }

    [variants.learned_prior]
    model.prior = "learned_normal"
    train.lr = 3e-4

A component given by name (a string, or a table with ``name``) replaces the base's component
with its options; a table of options alone (``train.estimator = { particles = 10 }``) updates
them. Finished runs and evaluations found in the output folder with the same config and
evaluation settings are reused, so an interrupted comparison resumes where it stopped.

Output rule (checked for every variant before anything is trained or written): the output
folder holds only pyrovae's tables and plots and run directories; a variant's folder is absent,
empty, a run of the variant's own config (reused when it has a checkpoint, else trained again)
or, with ``--overwrite`` only, a run of another config (replaced).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrovae.config import Config, read_toml
from pyrovae.errors import ConfigError
from pyrovae.evaluation.evaluate import Evaluation, evaluate
from pyrovae.inference.marginal_likelihood import DEFAULT_CHUNK_SIZE
from pyrovae.runs.diagnostics import COLLAPSE, NOT_CONVERGED, warning_kinds
from pyrovae.runs.directory import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    claim_run_dir,
    read_metrics,
    run_state,
)

__all__ = [
    "Result",
    "load_variants",
    "merge_variant",
    "compare",
    "write_tables",
    "save_plots",
]

EVALUATION_FILE = "evaluation.json"
#: The warnings column's word for each kind of warning (``runs.diagnostics``).
WARNING_CELLS = {COLLAPSE: "collapsed", NOT_CONVERGED: "not converged"}
#: What ``compare`` writes into its output folder besides the variants' run directories.
#: Paired intervals in ``results.png``: this many paired standard errors (95%) either side.
PAIRED_Z = 1.96
RESULT_FILES = frozenset({"results.md", "results.csv", "learning_curves.png", "results.png"})


@dataclass(frozen=True)
class Result:
    """One row of the comparison: a trained and evaluated variant."""

    variant: str
    estimator: str
    epochs: int
    seconds_per_epoch: float
    evaluation: Evaluation

    def row(self) -> dict[str, Any]:
        """The CSV row: ``kl_per_dim`` joined by spaces, ``warnings`` by semicolons."""
        numbers = self.evaluation.to_dict()
        kl = numbers.pop("kl_per_dim")
        numbers["kl_per_dim"] = "" if kl is None else " ".join(f"{v:.6g}" for v in kl)
        numbers["warnings"] = "; ".join(numbers.pop("warnings"))
        return {
            "variant": self.variant,
            "estimator": self.estimator,
            "epochs": self.epochs,
            "seconds_per_epoch": self.seconds_per_epoch,
            **numbers,
        }


def load_variants(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``[variants.NAME]`` tables of a TOML file, in file order."""
    path = Path(path)
    raw = read_toml(path, "variants file")
    variants = raw.get("variants")
    extra = sorted(set(raw) - {"variants"})
    if extra or not isinstance(variants, dict) or not variants:
        raise ConfigError(
            f"variants file {str(path)!r} must hold only [variants.NAME] tables"
            + (f"; unexpected: {', '.join(extra)}" if extra else "")
        )
    for name, table in variants.items():
        if not isinstance(table, dict):
            raise ConfigError(f"variants.{name}: expected a table of config keys")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"variants.{name}: use letters, digits, '-' and '_' in names")
    return variants


def merge_variant(base: Mapping[str, Any], variant: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a config as a dict) updated by ``variant``; see the module docstring."""
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in variant.items():
        old = merged.get(key)
        is_component = isinstance(old, Mapping) and "name" in old
        replaces = isinstance(value, str) or (isinstance(value, Mapping) and "name" in value)
        if isinstance(old, Mapping) and isinstance(value, Mapping) and not replaces:
            merged[key] = merge_variant(old, value) if not is_component else {**old, **value}
        else:
            merged[key] = value
    return merged


def compare(
    base: Config,
    variants: Mapping[str, Mapping[str, Any]],
    out: str | Path,
    particles: int = 5000,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    limit: int | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> list[Result]:
    """Train and evaluate every variant under ``out/NAME``; write tables and plots in ``out``."""
    from pyrovae.training.train import train

    out = Path(out)
    configs = {}
    for name, variant in variants.items():
        raw = merge_variant(base.to_dict(), variant)
        raw["name"] = f"{base.name}-{name}"
        try:
            configs[name] = Config.from_dict(raw)
        except ConfigError as error:
            raise ConfigError(f"variant {name!r}: {error}") from None
    reuse = _claim(out, configs, overwrite)  # every refusal before anything is written
    results = []
    # "diagnostics": evaluations cached before the accuracy and warnings are made again
    settings = {
        "particles": particles,
        "limit": limit,
        "seed": 0,
        "checkpoint": "best",
        "diagnostics": 1,
    }
    for name, config in configs.items():
        directory = out / name
        if reuse[name]:
            _say(quiet, f"{name}: reusing the trained run in {directory}")
        else:
            _say(quiet, f"{name}: training ({config.train.epochs} epochs)")
            train(config, out=directory, quiet=quiet, overwrite=run_state(directory) == "run")
        evaluation = _cached_evaluation(directory, settings)
        if evaluation is None or overwrite:
            _say(quiet, f"{name}: evaluating (K = {particles})")
            evaluation = evaluate(
                directory,
                particles=particles,
                chunk_size=chunk_size,
                limit=limit,
                device=str(_device(config)),
                progress=not quiet,
            )
            cache = {
                "settings": settings,
                "evaluation": evaluation.to_dict(),
                "log_likelihoods": list(evaluation.log_likelihoods),
            }
            (directory / EVALUATION_FILE).write_text(json.dumps(cache) + "\n")
        metrics = read_metrics(directory)
        seconds = sum(m["epoch_seconds"] for m in metrics) / max(1, len(metrics))
        epochs = len(metrics) or config.train.epochs  # early stopping may end a run sooner
        results.append(Result(name, _describe(config), epochs, seconds, evaluation))
    write_tables(results, out)
    save_plots(results, {name: read_metrics(out / name) for name in configs}, out)
    return results


def paired_difference(result: Result, baseline: Result) -> tuple[float, float]:
    """-log p(x) of ``result`` minus that of ``baseline`` on the same test datapoints: the mean
    of the per-datapoint differences d_i and its paired standard error std(d) / sqrt(n) (much
    smaller than either number's own, since the datapoints' difficulty cancels); NaN unless
    both were evaluated on the same (at least 2) datapoints."""
    ours = torch.tensor(result.evaluation.log_likelihoods, dtype=torch.float64)
    theirs = torch.tensor(baseline.evaluation.log_likelihoods, dtype=torch.float64)
    if ours.shape != theirs.shape or len(ours) < 2:
        return math.nan, math.nan
    difference = theirs - ours
    return float(difference.mean()), float(difference.std()) / math.sqrt(len(difference))


def write_tables(results: list[Result], out: Path) -> None:
    """``out/results.md`` (negative bounds in nats, lower is better) and ``out/results.csv``."""
    rows = []
    for r in results:
        difference, stderr = paired_difference(r, results[0])
        rows.append({**r.row(), "nll_minus_first": difference, "nll_minus_first_stderr": stderr})
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(markdown_table(results) + "\n")


def markdown_table(results: list[Result]) -> str:
    """The comparison as a Markdown table: -ELBO and -log p(x) per test datapoint, in nats."""
    first = results[0].evaluation
    classified = any(r.evaluation.accuracy is not None for r in results)
    header = (
        f"| variant | estimator | epochs | test -ELBO | test -log p(x), K={first.particles}"
        f" | vs {results[0].variant} | KL | active units | s/epoch |"
        + (" accuracy |" if classified else "")
        + " warnings |"
    )
    lines = [header, "|---" * header.count(" |") + "|"]
    for r in results:
        e = r.evaluation
        difference, stderr = paired_difference(r, results[0])
        paired = "-" if r is results[0] else f"{difference:+.2f} ± {stderr:.2f}"
        accuracy = "-" if e.accuracy is None else f"{e.accuracy:.4f}"
        warnings = ", ".join(WARNING_CELLS.get(k, k) for k in warning_kinds(e.warnings))
        lines.append(
            f"| {r.variant} | `{r.estimator}` | {r.epochs} | {-e.elbo:.2f}"
            f" | {-e.log_likelihood:.2f} ± {e.log_likelihood_stderr:.2f} | {paired}"
            f" | {e.kl:.2f} | {e.active_units}/{e.latent_dim} | {r.seconds_per_epoch:.1f} |"
            + (f" {accuracy} |" if classified else "")
            + f" {warnings or '-'} |"
        )
    lines.append("")
    lines.append(
        f"Per datapoint in nats on {first.datapoints} datapoints of the test split; lower is"
        " better; ± is the standard error over datapoints. `vs "
        f"{results[0].variant}`: the difference in -log p(x) on the same datapoints, with"
        " its paired standard error. KL at beta = 1, analytic where registered."
        + (" accuracy: test accuracy of the classifier q(y|x)." if classified else "")
        + " warnings: posterior collapse (`collapsed`), validation loss still falling"
        " (`not converged`); see `pyrovae evaluate`."
    )
    return "\n".join(lines)


def save_plots(results: list[Result], metrics: Mapping[str, list[dict]], out: Path) -> None:
    """``learning_curves.png`` (validation and training loss per epoch, all variants) and
    ``results.png``: test -ELBO and -log p(x) as bars, and beside them each variant's paired
    difference in -log p(x) from the first with its 95% interval (1.96 paired standard
    errors)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, records in metrics.items():
        epochs = [m["epoch"] for m in records]
        (line,) = axes[0].plot(epochs, [m["valid_loss"] for m in records], marker=".", label=name)
        axes[1].plot(epochs, [m["train_loss"] for m in records], color=line.get_color())
    axes[0].set_title("validation -ELBO (analytic KL)")
    axes[1].set_title("training objective")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per datapoint")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=100)
    plt.close(fig)

    fig, (ax, paired) = plt.subplots(
        1, 2, figsize=(max(9, 2.4 * len(results)), 4), gridspec_kw={"width_ratios": [3, 2]}
    )
    positions = list(range(len(results)))
    names = [r.variant for r in results]
    width = 0.4
    elbo = [-r.evaluation.elbo for r in results]
    nll = [-r.evaluation.log_likelihood for r in results]
    ax.bar([p - width / 2 for p in positions], elbo, width, label="-ELBO")
    k = results[0].evaluation.particles
    ax.bar([p + width / 2 for p in positions], nll, width, label=f"-log p(x), K={k}")
    ax.set_xticks(positions, names, rotation=20)
    low = min(nll + elbo)
    ax.set_ylim(low - 0.1 * (max(elbo) - low + 1), max(elbo) + 0.05 * (max(elbo) - low + 1))
    ax.set_ylabel("nats per test datapoint (lower is better)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")

    differences = [paired_difference(r, results[0]) for r in results]
    paired.errorbar(
        positions,
        [d for d, _ in differences],
        yerr=[PAIRED_Z * se for _, se in differences],  # the first's is 0
        fmt="o",
        capsize=4,
    )
    paired.axhline(0.0, color="grey", linewidth=1)
    paired.set_xticks(positions, names, rotation=20)
    paired.set_ylabel(f"-log p(x) minus {results[0].variant}'s (nats)")
    paired.set_title("paired difference, 95% interval")
    paired.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------- helpers
def _describe(config: Config) -> str:
    estimator = config.train.estimator
    options = dict(estimator.options)
    particles = options.pop("particles", 1)
    text = estimator.name + (f":{particles}" if particles != 1 else "")
    return text + "".join(f",{k}={v}" for k, v in options.items())


def _device(config: Config):
    from pyrovae.runs.directory import resolve_device

    return resolve_device(config.train.device)


def _claim(out: Path, configs: Mapping[str, Config], overwrite: bool) -> dict[str, bool]:
    """Apply the output rule to ``out`` and every variant's folder; per variant, whether its
    finished run is reused."""
    if not str(out).strip():
        raise ConfigError("--out: an empty path; name a folder")
    if os.path.lexists(out):
        if out.is_symlink() or not out.is_dir():
            raise ConfigError(f"--out {str(out)!r} is not a folder; choose another --out")
        for entry in out.iterdir():
            if entry.name in RESULT_FILES and entry.is_file() and not entry.is_symlink():
                continue
            if run_state(entry) not in ("empty", "run"):
                raise ConfigError(
                    f"--out {str(out)!r} holds {entry.name!r}, which is neither a run nor a"
                    " result of pyrovae compare; choose another --out"
                )
    reuse = {}
    for name, config in configs.items():
        directory = out / name
        same = _same_config(directory, config)
        reuse[name] = same and (directory / CHECKPOINT_FILE).is_file() and not overwrite
        if reuse[name]:
            _check_metrics(directory)
        if run_state(directory) == "run" and not same and not overwrite:
            raise ConfigError(
                f"compare: {directory} holds a run of another config; pass --overwrite to"
                " replace it, or choose another --out"
            )
        claim_run_dir(directory, overwrite=True)  # only a folder that is no run is refused
    return reuse


def _check_metrics(directory: Path) -> None:
    """The metrics of a reused run hold what the tables and plots read."""
    for record in read_metrics(directory):
        for key in ("epoch", "train_loss", "valid_loss", "epoch_seconds"):
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(
                    f"compare: {directory / METRICS_FILE} has a record without a number"
                    f" {key!r}; pass --overwrite to train the variant again"
                )


def _same_config(directory: Path, config: Config) -> bool:
    """Whether ``directory`` holds a run whose config.toml is ``config``."""
    if run_state(directory) != "run" or not (directory / CONFIG_FILE).is_file():
        return False
    try:
        saved = read_toml(directory / CONFIG_FILE, "run config")
    except ConfigError:
        return False
    return saved == config.to_dict()


def _cached_evaluation(directory: Path, settings: dict) -> Evaluation | None:
    path = directory / EVALUATION_FILE
    if not path.is_file() or path.stat().st_mtime < (directory / CHECKPOINT_FILE).stat().st_mtime:
        return None
    try:
        cached = json.loads(path.read_text())
        if cached["settings"] != settings:
            return None
        return Evaluation(**cached["evaluation"], log_likelihoods=tuple(cached["log_likelihoods"]))
    except (ValueError, KeyError, TypeError):
        return None


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(f"compare: {message}", flush=True)
