"""``pyrovae train`` with its ``epoch_seconds`` counted in CPU seconds of the process.

On a machine shared with other jobs a training budget in wall-clock seconds depends on the
share of the core a run got; in CPU seconds (``timing.use_cpu_clock``: one thread, the
wall-clock of an idle core) it is the work done. ``benchmarks/torch_recipes.py --cpu-clock
--seconds S`` gives a hand-written twin the same budget S, the sum of the run's
``epoch_seconds``. The arguments are ``pyrovae train``'s:

    OMP_NUM_THREADS=1 python benchmarks/train_cpu_clock.py \\
        --config examples/reproduce/tomczak_vampprior.toml --budget 0.0055 --device cpu \\
        --data-dir ../shared/data --out runs/vamp
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import use_cpu_clock  # noqa: E402

from pyrovae.cli.main import main  # noqa: E402

if __name__ == "__main__":
    use_cpu_clock()
    sys.exit(main(["train", *sys.argv[1:]]))
