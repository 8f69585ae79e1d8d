"""The training engine: one loop for every scheme, and what surrounds it, one job per module.

The engine owns what all schemes share: the optimizer (SGD with momentum and weight decay on every
parameter), the learning-rate schedule (set before every batch for every parameter group), the model's mode
(eval while attacking, train for the update), progress, metrics, checkpoints and the run directory. A scheme
only says what the loss of a batch is. docs/algorithms.md ("How the training package is organised") maps
the modules:

* ``run``: :func:`finetune`, the public entry (configuration, run folder, resume, final weights);
* ``preflight``: every name, radius, the device, the output folder, the data and the model, checked before
  any compute (:class:`Plan`);
* ``loop``: the :class:`Trainer`'s epochs and steps;
* ``context``: :class:`EngineContext`, what a scheme trains with (training attacks, pass account, schedule);
* ``precision``: autocast, the fp16 gradient scaler, the attacks' precision and the other device settings;
* ``checkpoints``: save, prune, find the last good one, restore (RNG states included);
* ``signals``: SIGINT/SIGTERM stop after the current batch (:class:`RunInterrupted`);
* ``nonfinite``: a non-finite loss skips its update or stops the run (:class:`TrainingError`);
* ``results``: :class:`RunResult` and the per-epoch record.
"""

from __future__ import annotations

from robustft.training.checkpoints import CHECKPOINT_FORMAT, load_last_checkpoint
from robustft.training.context import EngineContext, PassCounter, TrainingAttack, training_attacks
from robustft.training.loop import Trainer
from robustft.training.nonfinite import TrainingError
from robustft.training.precision import Performance
from robustft.training.preflight import Plan, preflight
from robustft.training.results import EpochStats, RunResult
from robustft.training.run import finetune
from robustft.training.signals import RunInterrupted, StopRequest

__all__ = [
    "CHECKPOINT_FORMAT",
    "EngineContext",
    "EpochStats",
    "PassCounter",
    "Performance",
    "Plan",
    "RunInterrupted",
    "RunResult",
    "StopRequest",
    "Trainer",
    "TrainingAttack",
    "TrainingError",
    "finetune",
    "load_last_checkpoint",
    "preflight",
    "training_attacks",
]
