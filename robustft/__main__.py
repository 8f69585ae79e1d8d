"""``python -m robustft`` (and ``torchrun -m robustft``) runs the command line."""

from robustft.cli import run

run()
