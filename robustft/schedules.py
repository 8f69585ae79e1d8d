"""Learning-rate schedules, as functions of the position in training measured in epochs (fractional).

* ``step`` (fine-tuning, both papers): ``lr / 10**k`` in the k-th interval of ``lr_step`` epochs. By default
  the interval is a third of the run, whatever its length: the reference code's ``piecewise-ft`` schedule,
  which is E-AT App. A's "at the beginning of each epoch" for 3 CIFAR-10 epochs and "every 1/3 of training
  steps" for 1 ImageNet epoch (and what RAMP's fine-tuning uses). ``lr_step`` sets another interval.
* ``piecewise`` (training PreAct ResNet-18 from scratch): ``lr`` for the first half of training,
  ``lr/10`` until 75%, ``lr/100`` after.
* ``cyclic`` (training WideResNet-28-10 from scratch): linear from 0 up to ``lr`` over the first 40% of
  training, then linear down to 0.

The engine sets the rate before every batch, for every parameter group.
"""

from __future__ import annotations

import math

from robustft.errors import BadInputError

SCHEDULES = ("step", "piecewise", "cyclic")


#: Divisions of the learning rate by 10 in a ``step`` run when ``lr_step`` is not given.
STEP_THIRDS = 3


def step_interval(epochs: float, lr_step: float | None) -> float:
    """Epochs between two divisions of the ``step`` schedule: ``lr_step``, or a third of the run."""
    return lr_step if lr_step is not None else epochs / STEP_THIRDS


def lr_at(schedule: str, base_lr: float, position: float, epochs: float, lr_step: float | None = None) -> float:
    """The learning rate at ``position`` epochs into a run of ``epochs`` epochs."""
    if schedule == "step":
        return base_lr * 0.1 ** math.floor(position / step_interval(epochs, lr_step) + 1e-9)
    progress = position / epochs
    if schedule == "piecewise":
        return base_lr if progress < 0.5 else base_lr / 10 if progress < 0.75 else base_lr / 100
    if schedule == "cyclic":
        peak = 0.4
        return base_lr * (progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak)))
    raise BadInputError(f"Unknown learning-rate schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}.")
