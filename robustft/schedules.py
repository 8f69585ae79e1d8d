"""Learning-rate schedules, as functions of the position in training measured in epochs (fractional).

* ``step`` (fine-tuning, both papers): ``lr / 10**k`` in the k-th interval of ``lr_step`` epochs; the E-AT
  recipe divides by 10 at every epoch boundary (CIFAR-10) or every third of the epoch (ImageNet).
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


def lr_at(schedule: str, base_lr: float, position: float, epochs: float, lr_step: float = 1.0) -> float:
    """The learning rate at ``position`` epochs into a run of ``epochs`` epochs."""
    if schedule == "step":
        return base_lr * 0.1 ** math.floor(position / lr_step + 1e-9)
    progress = position / epochs
    if schedule == "piecewise":
        return base_lr if progress < 0.5 else base_lr / 10 if progress < 0.75 else base_lr / 100
    if schedule == "cyclic":
        peak = 0.4
        return base_lr * (progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak)))
    raise BadInputError(f"Unknown learning-rate schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}.")
