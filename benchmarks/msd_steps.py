"""Which norm's step MSD takes, and what its points break, for several l1 step settings, on one model.

MSD (Maini et al. 2020) forms one candidate per norm at every step and keeps the one with the highest loss.
Fine-tuning the shipped l-inf model with it gives little l1 robustness (docs/reproduction.md, claim (d)),
and its logs show the l1 candidate winning only about 5% of the steps, where the E-AT paper (App. B.2,
Fig. 4 right) reports l1 taken 3 to 4 times less often than l-inf. This script runs MSD's attack alone (no
training) on the first training images for each setting given and prints, per setting:

* the share of point-steps each norm's candidate won;
* how many returned points lie in each ball (a point from an l-inf step lies outside the l1 ball when its
  l1 length exceeds 12), and how many points the attack misclassified;
* the robust accuracy of the same points under APGD in l1 alone, for comparison.

Settings are ``travel-1,l1-topk`` pairs (total l1 travel in radii over the steps, fraction of coordinates
an l1 step moves); the default includes robustft's (2.5, 0.05), Maini et al.'s sparsity (0.005) and the
cleverhans SLIDE defaults at 10 steps (step eps/10, the top 1%: 1.0, 0.01).

    OMP_NUM_THREADS=1 python benchmarks/msd_steps.py --dataset imagefolder:DIR [--n 256] [--setting 2.5,0.05 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

DEFAULT_SETTINGS = ("2.5,0.05", "2.5,0.005", "1.0,0.01", "10,0.05", "2.5,0.2")


def measure(dataset: str, n: int, steps: int, settings: list[tuple[float, float]], batch: int) -> dict[str, Any]:
    from robustft.lp import check_in_ball_and_box
    from robustft.models import load_model, resolve_dataset
    from robustft.norms import Norm
    from robustft.pluginmanager import registries
    from robustft_plugins.attacks.apgd import APGD
    from robustft_plugins.schemes.msd import MultiSteepestDescent

    regs = registries()
    model, _ = load_model("cifar10-preact-w16-linf", regs, torch.device("cpu"))
    model.eval()
    train = resolve_dataset(dataset, regs).train(augment=False)
    x, y = next(iter(torch.utils.data.DataLoader(train, batch_size=n)))
    eps = {Norm.LINF: 8 / 255, Norm.L2: 0.5, Norm.L1: 12.0}
    rows = []
    for travel, topk in settings:
        attack = MultiSteepestDescent(eps, steps, travel={Norm.L1: travel}, l1_topk=topk)
        taken = torch.zeros(3, dtype=torch.long)
        inside = {norm: 0 for norm in eps}
        broken = 0
        for start in range(0, n, batch):
            xb, yb = x[start : start + batch], y[start : start + batch]
            result = attack(model, xb, yb)
            taken += result.steps_taken
            broken += int(result.success.sum())
            for norm in eps:
                inside[norm] += int(check_in_ball_and_box(result.x_adv, xb, norm, eps[norm]).sum())
        shares = taken.double() / taken.sum()
        rows.append(
            {
                "travel_1": travel,
                "l1_topk": topk,
                "step_share": {norm.value: round(float(s), 3) for norm, s in zip(attack.norms, shares)},
                "points_in_ball": {norm.value: count for norm, count in inside.items()},
                "misclassified": broken,
            }
        )
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
    l1_robust = 0
    for start in range(0, n, batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        l1_robust += int((~APGD(Norm.L1, 12.0, steps=steps, topk=0.05)(model, xb, yb).success).sum())
    return {"images": n, "attack_steps": steps, "clean_correct": clean, "apgd_l1_robust": l1_robust, "settings": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="CIFAR-10 training images, e.g. imagefolder:DIR")
    p.add_argument("--n", type=int, default=256, help="training images (the first ones)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--setting", action="append", help="travel-1,l1-topk (repeatable)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    settings = [tuple(float(v) for v in s.split(",")) for s in (args.setting or DEFAULT_SETTINGS)]
    result = measure(args.dataset, args.n, args.steps, settings, args.batch)
    print(
        f"{result['images']} training images, {result['attack_steps']} steps; clean correct {result['clean_correct']}, "
        f"robust to APGD-l1 alone {result['apgd_l1_robust']}"
    )
    print("travel-1  l1-topk  steps l-inf/l2/l1     points in l-inf/l2/l1 ball  misclassified")
    for row in result["settings"]:
        share, inside = row["step_share"], row["points_in_ball"]
        print(
            f"{row['travel_1']:8g}  {row['l1_topk']:7g}  {share['inf']:.3f}/{share['2']:.3f}/{share['1']:.3f}"
            f"     {inside['inf']}/{inside['2']}/{inside['1']}{'':14s}{row['misclassified']}"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
