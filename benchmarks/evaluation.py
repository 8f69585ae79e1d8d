"""Evaluation throughput: test points per second of the E-AT protocol, per norm.

Each norm runs alone through :func:`robustft.evaluation.evaluate_model` (APGD-CE then APGD-T on the
points still robust; l1 with 5 restarts, 5 targets and the large-radius schedule), so the figure
includes the cascade's savings: points broken early are not attacked again.
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import torch

from robustft.norms import Norm


def throughput(device: torch.device, n_ex: int, steps: int, batch_size: int) -> list[dict[str, Any]]:
    from robustft.evaluation import evaluate_model
    from robustft.models import load_model, resolve_dataset
    from robustft.pluginmanager import registries

    regs = registries()
    model, _ = load_model("digits-cnn-linf", regs, device)
    data = resolve_dataset("digits", regs)
    suite = regs.suites.get("e-at")
    rows = []
    for norm in (Norm.LINF, Norm.L2, Norm.L1):
        start = time.perf_counter()
        result = evaluate_model(
            model,
            data,
            [norm],
            {norm: Fraction(data.default_eps[norm])},
            suite=suite,
            registries=regs,
            n_ex=n_ex,
            steps=steps,
            batch_size=batch_size,
            device=device,
            name="digits-cnn-linf",
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "workload": "digits-cnn",
                "norm": norm.label,
                "n": result.n,
                "steps": steps,
                "seconds": seconds,
                "images_per_s": result.n / seconds,
                "clean": result.clean,
                "robust": result.robust[norm],
            }
        )
    return rows
