"""Training costs: adversarial-training efficiency, and the time per epoch of every installed scheme.

Efficiency: ``(k + 1) * t_clean / t_adv``, with ``t_clean`` one clean training step (forward,
backward, SGD step) and ``t_adv`` one step of l-inf adversarial training with a k-step APGD attack
through the engine's own :class:`robustft.training.EngineContext` and the ``linf-at`` scheme. A k-step
attack is k + 1 forward and k backward passes (input gradients only), the update one forward and one
backward pass, so 1.0 is roughly the compute floor; overheads outside the model push it down.

Schemes: each scheme fine-tunes the embedded default for two epochs on the first ``n_train`` digits
training points, each run in a fresh process (so that the peak resident memory is the scheme's own), and
every scheme runs ``repeats`` times round-robin; a run's time is its faster epoch, a scheme's the median
run's. The table reports it relative to ``linf-at``'s and, for schemes that record the points they
attacked per norm (E-AT, SAT, AVG, MAX), to "matched" single-norm AT: the l-inf, l2 and l1 AT epochs
weighted by those shares. E-AT attacks each batch once, in the norm it draws, so matched AT is what
"the price of one" single-norm AT means for it.
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
    from robustft.norms import Norm
    from robustft.pluginmanager import registries
    from robustft.training import EngineContext

    regs = registries()
    model = work.model
    ctx = EngineContext(
        model=model,
        device=device,
        eps={Norm.LINF: work.eps["inf"]},
        attack_factory=regs.attacks.get("apgd"),
        attack_steps=steps,
        epochs=1,
        batches_per_epoch=1,
        rng=torch.Generator().manual_seed(0),
        num_classes=10,
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
    from robustft.models import load_model, resolve_dataset
    from robustft.pluginmanager import registries
    from robustft.training import finetune

    dev = torch.device(device)
    # Imports, the plugin registries, the model and the data set first, so that the peak that follows is
    # the training's.
    load_model("digits-cnn-linf", registries(), dev)
    resolve_dataset("digits", registries()).train(augment=True)
    baseline = reset_peak(dev)
    with tempfile.TemporaryDirectory(prefix="robustft-bench-") as tmp:
        os.environ["ROBUSTFT_RUNS_DIR"] = tmp  # the run's "latest" pointer must not touch the user's runs
        run = finetune(
            scheme=scheme,
            epochs=2,
            n_train=n_train,
            batch_size=batch_size,
            attack_steps=steps,
            device=device,
            out=str(Path(tmp) / scheme),
        )
    # Two epochs, the faster counts: the first one also pays for warming up the allocator and kernels.
    epoch = min(run.epochs, key=lambda e: e["seconds"])
    peak = peak_memory_mib(dev)
    return {
        "scheme": scheme,
        "seconds": epoch["seconds"],
        "images": epoch["images"],
        "peak_memory_mib": peak,
        "baseline_memory_mib": baseline,
        "peak_increase_mib": max(peak - baseline, 0.0),
        # Points attacked per norm in that epoch (E-AT's draws), for the matched single-norm comparator.
        "attacked_points": epoch.get("attacked_points"),
    }


def schemes(
    device: torch.device, n_train: int, batch_size: int, steps: int, names: list[str] | None = None, repeats: int = 3
) -> list[dict[str, Any]]:
    """Every scheme ``repeats`` times, each run in a fresh process, round-robin (scheme after scheme, then
    again) so that a slow spell of a shared machine hits all schemes alike; the median run counts."""
    from robustft.pluginmanager import registries

    names = names or [n for n in registries().schemes.names() if n != "lp-at"]  # lp-at is linf-at by default
    if "linf-at" in names:
        names = ["linf-at"] + [n for n in names if n != "linf-at"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--device",
        device.type,
        "--n-train",
        str(n_train),
        "--train-batch",
        str(batch_size),
        "--train-steps",
        str(steps),
        "--worker-scheme",
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    errors: dict[str, str] = {}
    for _ in range(max(repeats, 1)):
        for name in names:
            if name in errors:
                continue
            for _ in range(2):  # one retry: a shared machine (files being rewritten, memory pressure) can fail a run
                proc = subprocess.run([*command, name], capture_output=True, text=True, env=env)
                if proc.returncode == 0:
                    break
            if proc.returncode != 0:
                errors[name] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                continue
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows: list[dict[str, Any]] = []
    for name in names:
        if name in errors:
            rows.append({"scheme": name, "error": errors[name]})
            continue
        ordered = sorted(runs[name], key=lambda r: r["seconds"])
        row = dict(ordered[(len(ordered) - 1) // 2])  # the median run (the lower one of an even count)
        row["runs_seconds"] = [r["seconds"] for r in runs[name]]
        rows.append(row)
    seconds = {r["scheme"]: r["seconds"] for r in rows if "seconds" in r}
    base = seconds.get("linf-at")
    single = {"inf": seconds.get("linf-at"), "2": seconds.get("l2-at"), "1": seconds.get("l1-at")}
    for r in rows:
        if base and "seconds" in r:
            r["relative_to_linf_at"] = r["seconds"] / base
        # E-AT attacks each batch in one norm: its fair comparator is single-norm AT in the norms it drew,
        # weighted by the share of points attacked in each ("matched" AT).
        attacked = r.get("attacked_points") or {}
        total = sum(attacked.values())
        if total and all(single.get(n) for n, c in attacked.items() if c):
            matched = sum(c / total * single[n] for n, c in attacked.items() if c)
            r["matched_at_seconds"] = matched
            r["relative_to_matched_at"] = r["seconds"] / matched
    return rows
