"""Does an E-AT training step cost more than a single-norm AT step in the norm E-AT drew?

One process, one batch of digits training points, the embedded default model: rounds of (``linf-at``,
``l1-at``, ``e-at``) training steps, the order rotated every round so that no scheme always runs first or
last (on a small machine the last of three read 3% slower without the rotation). Each E-AT step is
compared with the single-norm step of the same round in the norm it drew; the median ratio is printed
(1.0: E-AT's draw and its one sum of the batch's successes cost nothing measurable).

    OMP_NUM_THREADS=1 python benchmarks/eat_step.py [--rounds 60] [--batch 128] [--device cpu] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import synchronize  # noqa: E402

SINGLE = {"inf": "linf-at", "1": "l1-at"}


def measure(rounds: int, batch: int, steps: int, device: torch.device) -> dict[str, Any]:
    from robustft.config import FinetuneConfig
    from robustft.models import load_model, resolve_dataset
    from robustft.norms import Norm
    from robustft.pluginmanager import registries
    from robustft.training import EngineContext

    regs = registries()
    model, _ = load_model("digits-cnn-linf", regs, device)
    train = resolve_dataset("digits", regs).train(augment=False)
    x, y = next(iter(torch.utils.data.DataLoader(train, batch_size=batch)))
    x, y = x.to(device), y.to(device)
    ctx = EngineContext(
        model=model,
        device=device,
        eps={Norm.LINF: 0.1, Norm.L1: 2.0},
        attack_factory=regs.attacks.get("apgd"),
        attack_steps=steps,
        epochs=1,
        batches_per_epoch=1,
        rng=torch.Generator().manual_seed(0),
        num_classes=10,
        config=FinetuneConfig(lr=0.0),  # lr 0: every round attacks the same model
    )
    schemes = {
        "linf-at": regs.schemes.get("linf-at")((Norm.LINF,)),
        "l1-at": regs.schemes.get("l1-at")((Norm.L1,)),
        "e-at": regs.schemes.get("e-at")((Norm.LINF, Norm.L1)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in schemes}
    draws: list[str] = []
    order = list(schemes)
    for r in range(rounds + 1):  # round 0 warms up and is dropped
        for name in order[r % 3 :] + order[: r % 3]:
            model.train()
            synchronize(device)
            start = time.perf_counter()
            loss, logs = schemes[name].loss(model, x, y, ctx)
            ctx.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ctx.optimizer.step()
            synchronize(device)
            if r == 0:
                continue
            seconds[name].append(time.perf_counter() - start)
            if name == "e-at":
                draws.append(logs["norm"])
    ratios = [seconds["e-at"][i] / seconds[SINGLE[norm]][i] for i, norm in enumerate(draws)]
    per_norm = {
        norm: {
            "draws": draws.count(norm),
            "e_at_median_ms": 1e3 * statistics.median(t for t, d in zip(seconds["e-at"], draws) if d == norm),
            "single_norm_median_ms": 1e3 * statistics.median(seconds[SINGLE[norm]]),
        }
        for norm in sorted(set(draws))
    }
    return {
        "rounds": rounds,
        "batch": int(x.shape[0]),
        "attack_steps": steps,
        "device": device.type,
        "median_ratio_e_at_to_same_norm_at": statistics.median(ratios),
        "per_norm": per_norm,
        "median_ms": {name: 1e3 * statistics.median(v) for name, v in seconds.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="attack steps k")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    result = measure(args.rounds, args.batch, args.steps, torch.device(args.device))
    print(f"median E-AT step / single-norm AT step of the same round and norm: {result['median_ratio_e_at_to_same_norm_at']:.3f}")
    for norm, row in result["per_norm"].items():
        print(f"  l{norm}: {row['draws']} draws, E-AT {row['e_at_median_ms']:.1f} ms, {SINGLE[norm]} {row['single_norm_median_ms']:.1f} ms")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
