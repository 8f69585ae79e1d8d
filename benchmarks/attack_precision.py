"""Training attacks in fp32 against the run's bf16 autocast: cost and effect, side by side in one run.

    python benchmarks/attack_precision.py [--device cpu|cuda] [--repeats 5] [--json-out FILE]

The effect that matters for E-AT is the robust training error that feeds its norm sampling (Eq. 5): the
fraction of training points the 10-step training APGD breaks, per norm. Weaker bf16 gradients move it.
Workload: the embedded default's base model (digits-cnn-linf) on all 1,437 digits training points, batch
128, radii of the digits threat model. Each row alternates fp32 and bf16 attacks over ``--repeats`` rounds;
the time is the median seconds per pass over the training set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from robustft.models import load_model, resolve_dataset
from robustft.pluginmanager import registries


def robust_error(model, attack, batches, device, precision: str) -> tuple[float, float]:
    """Fraction of points the attack breaks, and the seconds it took, under ``precision``."""
    broken = total = 0
    tic = time.perf_counter()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        context = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with context:
            result = attack(model, x, y)
        broken += int(result.success.sum())
        total += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return broken / total, time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    reg = registries()
    model, _ = load_model("digits-cnn-linf", reg, device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    data = resolve_dataset("digits", reg)
    loader = torch.utils.data.DataLoader(data.train(), batch_size=128, shuffle=False)
    batches = list(loader)
    rows = {}
    for norm, radius in data.default_eps.items():
        attack = reg.attacks.get("apgd").build(norm, float(radius), steps=10, purpose="train")
        runs: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision in runs:
                runs[precision].append(robust_error(model, attack, batches, device, precision))
        rows[norm.value] = {
            precision: {"robust_error": values[0][0], "seconds_median": statistics.median(t for _, t in values)}
            for precision, values in runs.items()
        }
        fp32, bf16 = rows[norm.value]["fp32"], rows[norm.value]["bf16"]
        print(
            f"{norm.label:6s} robust training error fp32 {fp32['robust_error']:.4f}  bf16 {bf16['robust_error']:.4f}   "
            f"s/pass fp32 {fp32['seconds_median']:.2f}  bf16 {bf16['seconds_median']:.2f} "
            f"(bf16/fp32 {bf16['seconds_median'] / fp32['seconds_median']:.2f})"
        )
    result = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
