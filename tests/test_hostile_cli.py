"""Hostile input through the command line, generated: files, flags and run directories.

Each test draws hostile inputs of one class with hypothesis, lays them out in a fresh folder,
runs ``pyrovae.cli.main`` in this process and asserts what the README's "What survives what"
promises of a refusal: exit status 2, exactly one stderr line ``pyrovae: error: ...``, no
traceback, nothing on stdout, and every file that existed before byte-identical (none removed,
none added; an empty folder may be created). ``EXAMPLES`` sets how many inputs each test draws
(1,000 or more in all per run, in about a minute on two shared cores).

Ctrl-C at random moments of a real ``pyrovae train`` process (start-up included) is tested at
the end: one line, exit status 130.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyrovae
from pyrovae.cli.main import main
from pyrovae.config import TOML_MAX_BYTES, TOML_MAX_DEPTH
from pyrovae.evaluation.compare import RESULT_FILES
from pyrovae.runs.checkpoint import content_digest, load_checkpoint, save_checkpoint
from pyrovae.runs.directory import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, RUN_FILES

#: Inputs drawn by each of the 7 generated tests below: 1,050 in all by default.
EXAMPLES = int(os.environ.get("PYROVAE_HOSTILE_EXAMPLES", "150"))
GENERATED = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


# ------------------------------------------------------------------ the harness
def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under ``root``: its sha256, or where the link points."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            state[key] = "-> " + os.readlink(path)
        elif path.is_file():
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def assert_refused(folder: Path, argv: list[str], needle: str | None = None) -> str:
    """Run ``pyrovae ARGV`` in ``folder``; assert a clean refusal that changed no file."""
    before = snapshot(folder)
    out, err = io.StringIO(), io.StringIO()
    with inside(folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    stderr = err.getvalue()
    assert status == 2, (argv, status, stderr, out.getvalue()[-500:])
    assert stderr.startswith("pyrovae: error: ") and stderr.count("\n") == 1, (argv, stderr)
    assert stderr.endswith("\n") and "Traceback" not in stderr, (argv, stderr)
    assert out.getvalue() == "", (argv, out.getvalue())
    assert snapshot(folder) == before, (argv, stderr)
    if needle is not None:
        assert needle in stderr, (argv, stderr)
    return stderr


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A finished one-epoch run of the small digits model (config, metrics, checkpoints)."""
    directory = tmp_path_factory.mktemp("pristine") / "run"
    pyrovae.train(pyrovae.load_config(None, [*TINY, "train.epochs=1"]), out=directory, quiet=True)
    return directory


def sandbox() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="hostile-")


# ------------------------------------------------------------------ 1. TOML files
BAD_UTF8 = st.binary(max_size=40).map(lambda b: b"name = 'x'\n# " + b + b"\xff\xfe\x80")
DEEP = st.builds(
    lambda n, open_: f"x = {open_ * n}".encode(),
    st.integers(TOML_MAX_DEPTH + 1, 4000),
    st.sampled_from(["[", "{a = ", "[{b = "]),
)
DOTTED = st.integers(TOML_MAX_DEPTH + 1, 3000).map(lambda n: ("a" + ".a" * n + " = 1").encode())
HUGE = st.integers(1, 1000).map(lambda k: b"#" * (TOML_MAX_BYTES + k))
INVALID = st.text(max_size=60).map(lambda t: (t + "\n[[[ = ").encode())
TOML = st.one_of(BAD_UTF8, DEEP, DOTTED, HUGE, INVALID)


@GENERATED
@given(content=TOML, role=st.sampled_from(["config", "train", "compare", "resume"]))
def test_hostile_toml_files_are_refused_in_one_line(content, role):
    with sandbox() as name:
        folder = Path(name)
        if role == "resume":  # a run stopped before its first checkpoint, its config damaged
            (folder / "run").mkdir()
            (folder / "run" / CONFIG_FILE).write_bytes(content)
            (folder / "run" / METRICS_FILE).write_text("")
            argv = ["train", "--quiet", "--resume", "run"]
        else:
            (folder / "bad.toml").write_bytes(content)
            argv = {
                "config": ["config", "--config", "bad.toml"],
                "train": ["train", "--quiet", "--config", "bad.toml", "--out", "new"],
                "compare": ["compare", "--variants", "bad.toml", "--out", "cmp", "--quiet"],
            }[role]
        assert_refused(folder, argv)


# ------------------------------------------------------------------ 2. flags and sizes
def outside(low: int, high: int | None) -> st.SearchStrategy[str]:
    below = st.integers(max_value=low - 1)
    above = st.integers(min_value=high + 1) if high is not None else st.nothing()
    junk = st.sampled_from(["1e8", "abc", "", " ", "0x10", "1.5", "--", "nan", "∞"])
    return st.one_of(below.map(str), above.map(str), junk)


FLAGS = {
    "sample": [("--count", 1, 10_000), ("--seed", 0, 2**32 - 1)],
    "evaluate": [
        ("--seed", 0, 2**32 - 1),
        ("--particles", 1, 10**7),
        ("--chunk-size", 1, 10**9),
        ("--limit", 1, None),
    ],
    "gradients": [("--seed", 0, 2**32 - 1), ("--draws", 2, 10**6), ("--batch-size", 1, 10**6)],
}
SIZES = st.one_of(
    st.tuples(
        st.sampled_from(["model.latent_dim", "train.epochs", "train.batch_size", "train.seed"]),
        st.integers(min_value=2**63).map(str),  # beyond int64
    ),
    st.tuples(st.just("train.seed"), st.one_of(st.integers(max_value=-1), st.integers(2**32))),
    st.tuples(  # allocations no machine holds
        st.sampled_from(["model.latent_dim", "model.encoder.hidden", "model.decoder.hidden"]),
        st.integers(2**40, 2**50).map(str),
    ),
)


@st.composite
def bad_flags(draw) -> list[str]:
    if draw(st.booleans()):
        command = draw(st.sampled_from(sorted(FLAGS)))
        flag, low, high = draw(st.sampled_from(FLAGS[command]))
        return [command, "run", f"{flag}={draw(outside(low, high))}"]
    key, value = draw(SIZES)
    if key.endswith("hidden"):
        value = f"[{value}]"
    return ["train", "--quiet", "--out", "new", *TINY, f"{key}={value}"]


@GENERATED
@given(argv=bad_flags())
def test_out_of_range_sizes_seeds_and_counts_are_refused_naming_the_limit(pristine, argv):
    with sandbox() as name:
        folder = Path(name)
        shutil.copytree(pristine, folder / "run")
        stderr = assert_refused(folder, argv)
        assert any(
            word in stderr
            for word in ("must be", "expected an integer", "expected a value", "beyond", "memory")
        ), stderr


# ------------------------------------------------------------------ 3. picture outputs
PICTURE_OUT = st.one_of(
    st.just(""),
    st.just("   "),
    st.just("run"),  # a folder
    st.builds(lambda s: f"missing/{s}.png", st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
    st.builds(
        lambda stem, ext: f"{stem}.{ext}",
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        st.from_regex(r"[a-z0-9]{0,4}", fullmatch=True).filter(
            lambda e: e not in ("png", "jpg", "jpeg")
        ),
    ),
)


@GENERATED
@given(out=PICTURE_OUT, command=st.sampled_from(["sample", "gradients"]))
def test_bad_picture_outputs_are_refused_before_anything_runs(pristine, out, command):
    if command == "gradients" and out.endswith((".pdf", ".svg")):
        return  # a plot format gradients writes
    with sandbox() as name:
        folder = Path(name)
        shutil.copytree(pristine, folder / "run")
        assert_refused(folder, [command, "run", "--out", out], "--out")


# ------------------------------------------------------------------ 4. dataset files
def idx_bytes(shape: tuple[int, ...]) -> bytes:
    header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return header + bytes(range(256)) * (max(1, int(torch.tensor(shape).prod())) // 256 + 1)


MNIST_FILES = {
    "train-images-idx3-ubyte": (30, 28, 28),
    "train-labels-idx1-ubyte": (30,),
    "t10k-images-idx3-ubyte": (10, 28, 28),
    "t10k-labels-idx1-ubyte": (10,),
}


def sound_idx(shape: tuple[int, ...]) -> bytes:
    data = idx_bytes(shape)
    size = 4 + 4 * len(shape) + int(torch.tensor(shape).prod())
    return data[:size]


@st.composite
def damaged_idx(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(MNIST_FILES)))
    data = sound_idx(MNIST_FILES[name])
    how = draw(st.sampled_from(["magic", "header", "empty", "short", "long"]))
    if how == "magic":
        magic = draw(st.binary(min_size=4, max_size=4).filter(lambda m: m != data[:4]))
        return name, magic + data[4:]
    if how == "header":
        return name, data[: draw(st.integers(1, 4 + 4 * len(MNIST_FILES[name]) - 1))]
    if how == "empty":
        return name, b""
    if how == "short":
        return name, data[: -draw(st.integers(1, 100))]
    return name, data + draw(st.binary(min_size=1, max_size=50))


def exotic_tensor(kind: str) -> object:
    x = torch.rand(20, 4)
    return {
        "sparse": lambda: x.to_sparse(),
        "sparse_csr": lambda: x.to_sparse_csr(),
        "meta": lambda: torch.empty(20, 4, device="meta"),
        "dict-sparse": lambda: {"train": x.to_sparse(), "test": x},
        "dict-meta": lambda: {"train": x, "test": torch.empty(5, 4, device="meta")},
        "pickled": lambda: {"train": x, "test": x, "extra": Path("x")},
        "pickled-top": lambda: Path("x"),
    }[kind]()


@GENERATED
@given(
    damage=st.one_of(
        damaged_idx(),
        st.sampled_from(
            ["sparse", "sparse_csr", "meta", "dict-sparse", "dict-meta", "pickled", "pickled-top"]
        ),
    )
)
def test_damaged_dataset_files_are_refused_naming_the_file(damage):
    with sandbox() as name:
        folder = Path(name)
        if isinstance(damage, tuple):  # an MNIST folder with one damaged idx file
            raw = folder / "data" / "MNIST" / "raw"
            raw.mkdir(parents=True)
            for file, shape in MNIST_FILES.items():
                (raw / file).write_bytes(sound_idx(shape))
            bad, content = damage
            (raw / bad).write_bytes(content)
            overrides = ["data.name=mnist", "data.root=data", "data.download=false"]
            needle = bad
        else:
            with __import__("warnings").catch_warnings():
                __import__("warnings").simplefilter("ignore")
                torch.save(exotic_tensor(damage), folder / "data.pt")
            overrides = ["data.name=file", "data.path=data.pt"]
            needle = "data.pt"
        assert_refused(folder, ["train", "--quiet", "--out", "new", *TINY, *overrides], needle)


# ------------------------------------------------------------------ 5. crafted run dirs
def craft(directory: Path, change: Callable[[dict], None]) -> None:
    """Re-save the run's checkpoint, with its digest, after ``change`` (as an attacker who
    knows the format would)."""
    payload = load_checkpoint(directory / CHECKPOINT_FILE)
    change(payload)
    save_checkpoint(directory / CHECKPOINT_FILE, payload)


X_SHAPES = st.one_of(
    st.lists(st.integers(-3, 3), min_size=0, max_size=6),
    st.lists(st.integers(2**20, 2**62), min_size=1, max_size=3),
    st.sampled_from([[1, 8], [8, 8], [3, 8, 8], [1, 8, 8, 1], "1,8,8", None, 64, [1.0, 8, 8]]),
).filter(lambda s: s != [1, 8, 8])

BAD_RECORDS = st.one_of(
    st.sampled_from([None, 3, "x", [], {}]),
    st.fixed_dictionaries(
        {
            "epoch": st.sampled_from([1, 2, 0, -1, "1", None]),
            "step": st.sampled_from([26, -1, "x", None, 1.5]),
            "train_loss": st.sampled_from([1.0, float("nan"), float("inf"), "x", None]),
            "valid_loss": st.sampled_from([1.0, float("nan"), -float("inf"), [], None]),
            "skipped_steps": st.sampled_from([0, -3, "0", None]),
        }
    ).filter(
        lambda r: (
            not (
                r["epoch"] == 1
                and r["step"] == 26
                and r["train_loss"] == 1.0
                and r["valid_loss"] == 1.0
                and r["skipped_steps"] == 0
            )
        )
    ),
)


@st.composite
def crafted_runs(draw) -> tuple[str, Callable[[Path], None], list[str]]:
    """A damage to a run directory and the commands that must refuse it."""
    how = draw(
        st.sampled_from(["zeroed", "flipped", "x_shape", "weights", "metrics", "link", "old"])
    )
    every = ["sample", "evaluate", "gradients", "resume"]
    if how in ("zeroed", "flipped"):
        offset = draw(st.integers(0, 10**6))
        flips = draw(st.binary(min_size=1, max_size=8))

        def damage(run: Path) -> None:
            data = bytearray((run / CHECKPOINT_FILE).read_bytes())
            start = offset % len(data)
            if how == "zeroed":
                data[start : start + 4096] = bytes(len(data[start : start + 4096]))
            else:
                for i, b in enumerate(flips):
                    data[(start + i) % len(data)] ^= b or 1
            if bytes(data) == (run / CHECKPOINT_FILE).read_bytes():
                data[start] ^= 0xFF  # a block that was zero already: damage one byte
            (run / CHECKPOINT_FILE).write_bytes(bytes(data))

        return how, damage, every
    if how == "x_shape":
        shape = draw(X_SHAPES)
        commands = every if shape not in ([8, 8], [1, 8, 8, 1]) else ["evaluate", "gradients"]
        # (8, 8) and (1, 8, 8, 1) build the same weights: sample may draw them; the rest refuse
        return how, lambda run: craft(run, lambda p: p.__setitem__("x_shape", shape)), commands
    if how == "weights":
        value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        index = draw(st.integers(0, 100))

        def poison(payload: dict) -> None:
            tensors = list(payload["model"].values())
            tensor = tensors[index % len(tensors)]
            tensor.view(-1)[index % tensor.numel()] = value

        return how, lambda run: craft(run, poison), every
    if how == "metrics":
        record = draw(BAD_RECORDS)
        return how, lambda run: craft(run, lambda p: p.__setitem__("metrics", [record])), ["resume"]
    if how == "link":

        def dangle(run: Path) -> None:
            (run / CHECKPOINT_FILE).unlink()
            (run / CHECKPOINT_FILE).symlink_to(run / "gone.pt")

        return how, dangle, every

    def old_format(run: Path) -> None:
        payload = torch.load(run / CHECKPOINT_FILE, weights_only=True)
        payload.pop("sha256")
        payload["format"] = 1
        torch.save(payload, run / CHECKPOINT_FILE)

    return how, old_format, every


LAST = ["--checkpoint", "last"]  # the damaged file: checkpoint.pt (best.pt is the default)
COMMANDS = {
    "sample": ["sample", "run", *LAST],
    "evaluate": ["evaluate", "run", "--particles", "2", "--limit", "4", "--quiet", *LAST],
    "gradients": [
        *["gradients", "run", "--estimators", "trace", "--draws", "2", "--batch-size", "4"],
        *LAST,
    ],
    "resume": ["train", "--quiet", "--resume", "run", "train.epochs=2"],
}


@GENERATED
@given(crafted=crafted_runs(), pick=st.integers(0, 3))
def test_crafted_run_directories_are_refused_and_left_unchanged(pristine, crafted, pick):
    how, damage, commands = crafted
    with sandbox() as name:
        folder = Path(name)
        shutil.copytree(pristine, folder / "run", symlinks=True)
        damage(folder / "run")
        if how in ("zeroed", "flipped"):
            try:  # changed bytes that neither zip nor torch reads (a header's timestamp) are
                loaded = load_checkpoint(folder / "run" / CHECKPOINT_FILE)  # harmless:
            except pyrovae.CheckpointError:
                pass
            else:  # then the content must be exactly the run's own
                original = load_checkpoint(pristine / CHECKPOINT_FILE)
                assert content_digest(loaded) == content_digest(original)
                return
        assert_refused(folder, COMMANDS[commands[pick % len(commands)]])


# ------------------------------------------------------------------ 6. plugins
PLUGIN_BODIES = {
    "syntax": "x = (\n",
    "syntax-indent": "def f():\nreturn 1\n",
    "raise": "raise ValueError('boom')\n",
    "raise-runtime": "raise RuntimeError('out of memory, not really')\n",
    "import": "import no_such_module_pyrovae_test\n",
    "from-import": "from pyrovae import no_such_name\n",
    "duplicate": (
        "from pyrovae import register\n"
        "@register('prior', 'standard_normal')\n"
        "class Again:\n    pass\n"
    ),
    "exit": "import sys\nsys.exit({code})\n",
    "exit-raise": "raise SystemExit({code})\n",
    "non-utf8": b"x = '\xff\xfe'\n",
    "zero-division": "x = 1 / 0\n",
}


@st.composite
def plugins(draw) -> tuple[str, bytes | None, int | None]:
    """A plugin file's name, its content (None: not written) and the line that fails."""
    kind = draw(st.sampled_from([*PLUGIN_BODIES, "empty-name", "missing", "folder"]))
    if kind in ("empty-name", "missing", "folder"):
        return kind, None, None
    padding = draw(st.integers(0, 20))
    body = PLUGIN_BODIES[kind]
    if isinstance(body, str):
        body = body.format(code=draw(st.sampled_from([0, 1, 2, None, "'bye'"]))).encode()
    return kind, b"# padding\n" * padding + body, padding


@GENERATED
@given(
    plugin=plugins(),
    command=st.sampled_from([["train", "--quiet", "--out", "new", *TINY], ["config"]]),
)
def test_failing_plugins_are_one_line_naming_file_and_line(plugin, command):
    kind, content, padding = plugin
    with sandbox() as name:
        folder = Path(name)
        path = folder / f"plugin_{kind.replace('-', '_')}.py"
        if content is not None:
            path.write_bytes(content)
        if kind == "folder":
            path.mkdir()
        argv = [command[0], "--plugin", "" if kind == "empty-name" else str(path), *command[1:]]
        stderr = assert_refused(folder, argv, "--plugin")
        if content is not None:
            assert f"{path}:" in stderr, stderr  # the file and the line
            line = int(stderr.split(f"{path}:", 1)[1].split(":", 1)[0])
            assert padding < line <= padding + 4, stderr


# ------------------------------------------------------------------ 7. the output rule
@st.composite
def taken_outputs(draw) -> tuple[str, Callable[[Path, Path], None], list[str]]:
    """An --out (or --resume) target pyrovae must not write, and the command."""
    how = draw(
        st.sampled_from(
            ["user-folder", "run", "stopped", "file", "empty", "compare-other", "compare-user"]
        )
    )
    files = draw(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True).filter(
                lambda n: n not in RUN_FILES | RESULT_FILES  # a user's file, not pyrovae's
            ),
            st.binary(max_size=64),
            min_size=1,
            max_size=3,
        )
    )
    train = ["train", "--quiet", *TINY, "train.epochs=1"]
    if how == "user-folder":  # a user's files, maybe beside a config.toml and metrics.jsonl
        with_config = draw(st.booleans())

        def setup(folder: Path, pristine: Path) -> None:
            (folder / "out").mkdir()
            for file, content in files.items():
                (folder / "out" / file).write_bytes(content)
            if with_config:
                (folder / "out" / CONFIG_FILE).write_text("name = 'mine'\n")
                (folder / "out" / METRICS_FILE).write_text("")

        return how, setup, [*train, "--out", "out", *draw(st.sampled_from([[], ["--overwrite"]]))]
    if how in ("run", "stopped"):

        def setup(folder: Path, pristine: Path) -> None:
            shutil.copytree(pristine, folder / "out")
            if how == "stopped":  # killed before its first checkpoint
                for file in (CHECKPOINT_FILE, BEST_FILE):
                    (folder / "out" / file).unlink()

        return how, setup, [*train, "--out", "out"]
    if how == "file":
        return how, lambda f, p: (f / "out").write_bytes(b"x"), [*train, "--out", "out"]
    if how == "empty":
        return how, lambda f, p: None, [*train, "--out", draw(st.sampled_from(["", " "]))]

    def setup(folder: Path, pristine: Path) -> None:  # a compare folder
        (folder / "variants.toml").write_text("[variants.a]\ntrain.lr = 0.002\n")
        (folder / "cmp").mkdir()
        if how == "compare-other":  # variant a's folder holds a run of another config
            shutil.copytree(pristine, folder / "cmp" / "a")
        else:
            for file, content in files.items():
                (folder / "cmp" / file).write_bytes(content)

    compare = ["compare", "--quiet", "--variants", "variants.toml", "--out", "cmp", *TINY]
    return how, setup, [*compare, "train.epochs=1", "--particles", "2", "--limit", "4"]


@GENERATED
@given(target=taken_outputs())
def test_outputs_that_are_not_pyrovae_s_to_take_are_refused(pristine, target):
    how, setup, argv = target
    with sandbox() as name:
        folder = Path(name)
        setup(folder, pristine)
        assert_refused(folder, argv)


# ------------------------------------------------------------------ fixed cases
def test_a_refused_resume_leaves_config_and_metrics_byte_identical(pristine, tmp_path):
    """A resume with a changed config, and one whose checkpoint holds crafted optimizer state,
    are refused before ``config.toml`` and ``metrics.jsonl`` are rewritten."""
    shutil.copytree(pristine, tmp_path / "run")
    assert_refused(tmp_path, ["train", "--quiet", "--resume", "run", "train.lr=0.5"])
    craft(tmp_path / "run", lambda p: p.__setitem__("optimizer", {"state": 3, "groups": []}))
    assert_refused(tmp_path, ["train", "--quiet", "--resume", "run", "train.epochs=2"])


def test_overwrite_replaces_a_run_and_only_a_run(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "run")
    out, err = io.StringIO(), io.StringIO()
    argv = ["train", "--quiet", "--out", "run", "--overwrite", *TINY, "train.epochs=1"]
    with inside(tmp_path), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()
    (tmp_path / "run" / "notes.txt").write_text("mine")  # now the folder is not only a run
    assert_refused(tmp_path, argv, "not a pyrovae run")


def test_debug_shows_the_traceback_and_the_line(tmp_path, capsys):
    (tmp_path / "plugin.py").write_text("raise ValueError('boom')\n")
    assert main(["config", "--plugin", str(tmp_path / "plugin.py"), "--debug"]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and stderr.splitlines()[-1].endswith("ValueError: boom")


def test_a_plugin_component_that_exits_does_not_make_train_succeed(tmp_path):
    (tmp_path / "exits.py").write_text(
        "import sys\nfrom pyrovae import register\n"
        "from pyrovae.components.priors.gaussian import StandardNormal\n"
        "@register('prior', 'exits_on_build')\n"
        "class Exits(StandardNormal):\n"
        "    def __init__(self, latent_dim):\n"
        "        sys.exit(0)\n"
    )
    argv = ["train", "--quiet", "--plugin", "exits.py", "--out", "new", *TINY]
    assert_refused(tmp_path, [*argv, "model.prior=exits_on_build"], "sys.exit(0)")


# ------------------------------------------------------------------ Ctrl-C
@pytest.mark.parametrize("seed", range(2))
def test_ctrl_c_at_a_random_moment_is_one_line_and_status_130(tmp_path, seed):
    """SIGINT at a random moment of ``python -m pyrovae train`` (imports, data, training,
    writing): one line ``pyrovae: interrupted``, status 130; any checkpoint written loads."""
    import random

    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for trial in range(4):
        out = tmp_path / f"run{trial}"
        process = subprocess.Popen(
            [sys.executable, "-m", "pyrovae", "train", "--quiet", "--out", str(out), *TINY],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Python (and so pyrovae) ignores Ctrl-C when started with SIGINT ignored, as a
            # background job of a shell is: start it with the default, as a terminal does.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(rng.uniform(0.05, 4.0))
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        if process.returncode == 0:  # it finished first: nothing to interrupt
            continue
        assert process.returncode == 130, (stderr, stdout)
        assert stderr == "pyrovae: interrupted\n", stderr
        if (out / CHECKPOINT_FILE).exists():
            pyrovae.load_run(out)
