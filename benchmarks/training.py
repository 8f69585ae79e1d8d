"""Training costs: adversarial-training efficiency, and the time per epoch of every installed scheme.

Efficiency (issue 5): ``(k + 1) * t_clean / t_adv``, with ``t_clean`` one clean training step (forward,
backward, SGD step) and ``t_adv`` one step of l-inf adversarial training with a k-step APGD attack
through the engine's own :class:`robustft.engine.EngineContext` and the ``linf-at`` scheme. A k-step
attack is k + 1 forward and k backward passes (input gradients only), the update one forward and one
backward pass, so 1.0 is roughly the compute floor; overheads outside the model push it down.

Schemes: each scheme fine-tunes the embedded default for two epochs on the first ``n_train`` digits
training points, each in a fresh process (so that the peak resident memory is the scheme's own); the
table reports the faster epoch's seconds relative to ``linf-at``'s (and, for E-AT, to the mean of
``linf-at`` and ``l1-at``, the two attacks it alternates between).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common import Workload, peak_memory_mib, reset_peak, timed

HERE = Path(__file__).resolve().parent


def efficiency(work: Workload, device: torch.device, steps: int, repeats: int) -> dict[str, Any]:
    from robustft.config import FinetuneConfig
    from robustft.engine import EngineContext
    from robustft.norms import Norm
    from robustft.pluginmanager import registries

    regs = registries()
    model = work.model
    ctx = EngineContext(
        model=model, device=device, eps={Norm.LINF: work.eps["inf"]}, attack_factory=regs.attacks.get("apgd"),
        attack_steps=steps, epochs=1, batches_per_epoch=1, rng=torch.Generator().manual_seed(0), num_classes=10,
        config=FinetuneConfig(lr=0.01),
    )
    scheme = regs.schemes.get("linf-at")((Norm.LINF,))
    optimizer = ctx.optimizer
    x, y = work.x, work.y

    def clean_step() -> None:
        model.train()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def adversarial_step() -> None:
        model.train()
        loss, _ = scheme.loss(model, x, y, ctx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        t_clean, _ = timed(clean_step, device, repeats=3 * repeats)
        t_adv, _ = timed(adversarial_step, device, repeats=repeats)
    finally:
        model.load_state_dict(state)  # the other benchmarks want the model as it was
        model.eval()
    return {
        "workload": work.name,
        "batch": int(x.shape[0]),
        "attack_steps": steps,
        "seconds_clean_step": t_clean,
        "seconds_adversarial_step": t_adv,
        "efficiency": (steps + 1) * t_clean / t_adv,
    }


def scheme_epoch(scheme: str, *, device: str, n_train: int, batch_size: int, steps: int) -> dict[str, Any]:
    """One epoch of ``scheme`` in this process (the worker side of :func:`schemes`)."""
    from robustft.engine import finetune

    from robustft.models import load_model, resolve_dataset
    from robustft.pluginmanager import registries

    dev = torch.device(device)
    # Imports, the plugin registries, the model and the data set first, so that the peak that follows is
    # the training's.
    load_model("digits-cnn-linf", registries(), dev)
    resolve_dataset("digits", registries()).train(augment=True)
    baseline = reset_peak(dev)
    with tempfile.TemporaryDirectory(prefix="robustft-bench-") as tmp:
        os.environ["ROBUSTFT_RUNS_DIR"] = tmp  # the run's "latest" pointer must not touch the user's runs
        run = finetune(
            scheme=scheme, epochs=2, n_train=n_train, batch_size=batch_size, attack_steps=steps, device=device,
            out=str(Path(tmp) / scheme),
        )
    # Two epochs, the faster counts: the first one also pays for warming up the allocator and kernels.
    epoch = min(run.epochs, key=lambda e: e["seconds"])
    peak = peak_memory_mib(dev)
    return {
        "scheme": scheme, "seconds": epoch["seconds"], "images": epoch["images"], "peak_memory_mib": peak,
        "baseline_memory_mib": baseline, "peak_increase_mib": max(peak - baseline, 0.0),
    }


def schemes(device: torch.device, n_train: int, batch_size: int, steps: int, names: list[str] | None = None) -> list[dict[str, Any]]:
    from robustft.pluginmanager import registries

    names = names or [n for n in registries().schemes.names() if n != "lp-at"]  # lp-at is linf-at by default
    if "linf-at" in names:
        names = ["linf-at"] + [n for n in names if n != "linf-at"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    command = [sys.executable, str(HERE / "run.py"), "--device", device.type, "--n-train", str(n_train),
               "--train-batch", str(batch_size), "--train-steps", str(steps), "--worker-scheme"]
    for name in names:
        for _ in range(2):  # one retry: a shared machine (files being rewritten, memory pressure) can fail a run
            proc = subprocess.run([*command, name], capture_output=True, text=True, env=env)
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            rows.append({"scheme": name, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    seconds = {r["scheme"]: r["seconds"] for r in rows if "seconds" in r}
    base = seconds.get("linf-at")
    # E-AT attacks each batch in l1 or l-inf, so its fair single-norm comparator is also the mean of the two.
    mix = (seconds["linf-at"] + seconds["l1-at"]) / 2 if {"linf-at", "l1-at"} <= seconds.keys() else None
    for r in rows:
        if base and "seconds" in r:
            r["relative_to_linf_at"] = r["seconds"] / base
        if mix and r["scheme"] in ("e-at", "e-at-uniform"):
            r["relative_to_mean_linf_l1_at"] = r["seconds"] / mix
    return rows
