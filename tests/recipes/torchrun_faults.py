"""``torchrun ... tests/recipes/torchrun_faults.py ARGS``: ``adaptkit train ARGS`` with a fault injected on one rank.

``FAULT=<kind>:<rank>:<step>`` in the environment names it:

- ``sigterm``: the rank sends itself SIGTERM right after optimizer step ``step`` (a preemption reaching one process);
- ``error``: the rank raises ValueError right after optimizer step ``step`` (a failure of its own);
- ``chdir``: the rank runs in the folder ``FAULT_DIR``, so a relative ``train.output_dir`` is another folder there (a
  node that does not see the run folder); ``step`` is unused.
"""

from __future__ import annotations

import os
import signal
import sys

from recipes import train
from recipes.cli import main

kind, rank, at_step = os.environ["FAULT"].split(":")
if os.environ.get("RANK") == rank:
    if kind == "chdir":
        os.chdir(os.environ["FAULT_DIR"])
    else:
        step_once = train.TrainRecipe.optimizer_step

        def optimizer_step(self: train.TrainRecipe) -> None:
            step_once(self)
            if self.step == int(at_step):
                if kind == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    raise ValueError(f"injected failure after step {at_step}")

        train.TrainRecipe.optimizer_step = optimizer_step  # type: ignore[method-assign]

raise SystemExit(main(["train", *sys.argv[1:]]))
