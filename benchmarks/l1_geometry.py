"""What l1-APGD's sorting costs on a CPU: robustft.lp's two paths side by side, per call and per attack.

The l1 step keeps the top fraction of the gradient's coordinates and the l1 projection sorts the kinks of its
soft threshold. On an accelerator both sort every coordinate, without reading anything on the host; on the
CPU they read one count per call and take only the largest values with ``topk``
(``robustft.lp._largest_first``). This script times both paths in one process, alternating:

* per call, on the gradients and perturbations that a training attack (APGD-CE, 10 steps, ``topk`` 0.05,
  the papers' l1 radius 12) really passes to ``L1Step.direction`` and ``project_l1_box``;
* per attack, l1-APGD on each path against l-inf APGD with the same steps, the cost ratio that E-AT's
  claim to cost as much as l-inf AT rests on.

Rounds run every contender once, in an order rotated every round; the figures are medians over the rounds of
the process CPU time (other single-thread processes on the machine do not change it) and, for the ratio, of
each round's l1 attack over the l-inf attack of the same round.

The model is the shipped ``cifar10-preact-w16-linf``; the images are CIFAR-10 test images where ``--dataset``
names them (``imagefolder:<folder>/test``), else uniform noise labelled by the model's predictions.

    OMP_NUM_THREADS=1 python benchmarks/l1_geometry.py [--dataset imagefolder:DIR] [--batch 128] [--rounds 8] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch

PATHS = {"topk (CPU path)": True, "sort (accelerator path)": False}


def on_path(reads_are_free: bool):  # noqa: ANN201 - a context manager
    import robustft.lp

    return mock.patch.object(robustft.lp, "_reads_are_free", lambda t: reads_are_free)


def batch(dataset: str | None, n: int, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, str]:
    if dataset:
        from robustft.models import resolve_dataset
        from robustft.pluginmanager import registries

        test = resolve_dataset(dataset, registries()).test()
        x, y = next(iter(torch.utils.data.DataLoader(test, batch_size=n)))
        return x, y, f"the first {len(x)} test images of {dataset}"
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y, f"{n} uniform-noise images labelled by the model"


def measure(dataset: str | None, n: int, steps: int, rounds: int) -> dict[str, Any]:
    import robustft.lp as lp
    from robustft.models import load_model
    from robustft.norms import Norm
    from robustft.pluginmanager import registries
    from robustft_plugins.attacks.apgd import APGD

    device = torch.device("cpu")
    model, _ = load_model("cifar10-preact-w16-linf", registries(), device)
    model.eval()
    x, y, images = batch(dataset, n, model)

    # The arguments a training attack passes to the two l1 calls.
    directions, projections = [], []
    direction, projection = lp.L1Step.direction, lp.project_l1_box

    def record_direction(self, grad, **options):  # noqa: ANN001, ANN202
        directions.append((grad.clone(), {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in options.items()}))
        return direction(self, grad, **options)

    def record_projection(delta, x, eps):  # noqa: ANN001, ANN202
        projections.append((delta.clone(), x.clone(), eps))
        return projection(delta, x, eps)

    with mock.patch.object(lp.L1Step, "direction", record_direction), mock.patch.object(lp, "project_l1_box", record_projection):
        APGD(Norm.L1, 12.0, steps=steps, topk=0.05)(model, x, y)
    step = lp.L1Step()
    nonzero = [float((d.flatten(1) != 0).sum(dim=1).float().mean()) for d, _, _ in projections]

    def per_call(reads_are_free: bool):  # noqa: ANN202
        def run() -> None:
            with on_path(reads_are_free):
                for grad, options in directions:
                    step.direction(grad, **options)
                for delta, clean, eps in projections:
                    lp.project_l1_box(delta, clean, eps)

        return run

    def attack(norm: Norm, eps: float, reads_are_free: bool):  # noqa: ANN202
        def run() -> None:
            with on_path(reads_are_free):
                APGD(norm, eps, steps=steps, topk=0.05)(model, x, y)

        return run

    calls = rotated_rounds({name: per_call(free) for name, free in PATHS.items()}, rounds)
    attacks = {"l-inf APGD": attack(Norm.LINF, 8 / 255, True)}
    attacks |= {f"l1 APGD, {name}": attack(Norm.L1, 12.0, free) for name, free in PATHS.items()}
    whole = rotated_rounds(attacks, rounds)
    linf = whole["l-inf APGD"]
    return {
        "images": images,
        "batch": int(x.shape[0]),
        "attack_steps": steps,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "l1_calls": {"direction": len(directions), "projection": len(projections)},
        "mean_nonzero_coordinates_per_projection": [round(v, 1) for v in nonzero],
        "cpu_seconds_l1_calls_of_one_attack": {name: statistics.median(t) for name, t in calls.items()},
        "cpu_seconds_per_attack": {name: statistics.median(t) for name, t in whole.items()},
        "l1_over_linf": {name: statistics.median(a / b for a, b in zip(whole[f"l1 APGD, {name}"], linf)) for name in PATHS},
    }


def rotated_rounds(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Process CPU seconds of each contender in every round, after one warm-up round; the order rotates every
    round so that none always runs first or last."""
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    for r in range(rounds + 1):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            start = time.process_time()
            contenders[name]()
            if r:
                seconds[name].append(time.process_time() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", help="a data set with CIFAR-10 test images, e.g. imagefolder:DIR/test (default: noise)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="attack steps")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds (after one warm-up round)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    result = measure(args.dataset, args.batch, args.steps, args.rounds)
    print(
        f"{result['images']}, batch {result['batch']}, {result['attack_steps']} steps, {result['threads']} thread(s), median of {result['rounds']} rounds"
    )
    print(f"non-zero coordinates of the perturbations projected (of 3072): {result['mean_nonzero_coordinates_per_projection']}")
    for name, seconds in result["cpu_seconds_l1_calls_of_one_attack"].items():
        print(f"  l1 step + projection calls of one attack, {name}: {seconds * 1e3:.0f} ms")
    for name, seconds in result["cpu_seconds_per_attack"].items():
        print(f"  {name}: {seconds * 1e3:.0f} ms per attack")
    for name, ratio in result["l1_over_linf"].items():
        print(f"  l1 / l-inf APGD of the same round, {name}: {ratio:.3f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
