"""Benchmark: one epoch of every installed training scheme on the same model and data, side by side.

Prints time per epoch relative to ``lp-at`` in l-inf (single-norm adversarial training, the unit both papers
measure cost in) and the forward and backward passes per training image the engine recorded in each run's
metrics. Expected (E-AT Sec. 3.3, RAMP Sec. 5.4): about 1 for ``e-at`` and ``sat``, 2 for ``msd`` and
``ramp`` (plus one clean pass per image with gradient projection), 3 for ``max`` and ``avg``.

    OMP_NUM_THREADS=1 python benchmarks/schemes.py                      # the embedded default (digits)
    python benchmarks/schemes.py --model NAME --n-train 2048 --json-out bench.json
    python benchmarks/schemes.py --schemes lp-at,e-at,ramp --repeats 3

Every scheme runs in this one process, after one untimed warm-up run, through ``robustft.finetune`` with
the same settings and seed; runs go to a temporary folder (the user's ``runs/latest`` is left alone).
With ``--repeats N`` each scheme runs N times, round robin, and the median epoch time counts. ``ramp`` is
measured twice: as configured by default (no gradient projection) and with ``gp=on``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Extra configurations measured besides each scheme's defaults: (label, scheme, options).
VARIANTS: list[tuple[str, str, dict[str, str]]] = [("ramp gp=on", "ramp", {"gp": "on"})]
REFERENCE = "lp-at"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time one epoch of every installed scheme relative to lp-at (l-inf).")
    parser.add_argument("--model", default=None, help="base model (default: the embedded digits-cnn-linf)")
    parser.add_argument("--n-train", type=int, default=None, help="train on the first N points (default: all)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--attack-steps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--schemes", default=None, help="comma-separated subset (default: every installed scheme)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per scheme; the median epoch time counts")
    parser.add_argument("--json-out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def one_epoch(label: str, scheme: str, options: dict[str, str], args: argparse.Namespace, root: Path, index: int) -> dict[str, Any]:
    """Train ``scheme`` for one epoch; its seconds and passes per image as the engine recorded them."""
    import robustft
    from robustft.progress import ProgressReporter

    settings = {k: v for k, v in {"model": args.model, "n_train": args.n_train}.items() if v is not None}
    result = robustft.finetune(
        scheme=scheme,
        epochs=1,
        seed=0,
        batch_size=args.batch_size,
        attack_steps=args.attack_steps,
        device=args.device,
        options=options,
        out=str(root / f"{index:03d}-{label.replace(' ', '_').replace('=', '-')}"),
        progress=ProgressReporter(),
        **settings,
    )
    (epoch,) = result.epochs
    images = int(epoch["images"])
    passes = {k: v / images for k, v in epoch["passes"].items()}
    return {"seconds": float(epoch["seconds"]), "images": images, "passes_per_image": passes}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="robustft-bench-"))
    os.environ["ROBUSTFT_RUNS_DIR"] = str(root / "runs")  # before robustft reads it
    import torch
    from rich.console import Console
    from rich.table import Table

    from robustft.pluginmanager import registries

    console, err = Console(highlight=False), Console(stderr=True, highlight=False)
    installed = [entry.name for entry in registries().schemes]
    wanted = [s.strip() for s in args.schemes.split(",")] if args.schemes else installed
    jobs = [(name, name, {}) for name in wanted]
    jobs += [v for v in VARIANTS if v[1] in wanted]
    if REFERENCE not in wanted:
        jobs.insert(0, (REFERENCE, REFERENCE, {}))

    err.print(f"Warm-up ({REFERENCE}), then {len(jobs)} configuration(s) x {args.repeats} repeat(s); runs in {root}")
    one_epoch("warmup", REFERENCE, {}, args, root, 0)
    times: dict[str, list[float]] = {label: [] for label, _, _ in jobs}
    records: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    index = 1
    for _ in range(max(args.repeats, 1)):
        for label, scheme, options in jobs:
            if label in errors:
                continue
            start = time.perf_counter()
            try:
                record = one_epoch(label, scheme, options, args, root, index)
            except Exception as exc:  # a third-party scheme that cannot run here is reported, not fatal
                errors[label] = f"{type(exc).__name__}: {exc}"
                err.print(f"[yellow]{label}: failed ({errors[label]})[/yellow]")
                continue
            finally:
                index += 1
            times[label].append(record["seconds"])
            records[label] = record
            err.print(f"{label}: {record['seconds']:.2f} s/epoch (run {time.perf_counter() - start:.1f} s)")

    reference = statistics.median(times[REFERENCE]) if times.get(REFERENCE) else float("nan")
    rows = []
    for label, scheme, options in jobs:
        if label in errors or not times[label]:
            rows.append({"label": label, "scheme": scheme, "options": options, "error": errors.get(label, "no run")})
            continue
        seconds = statistics.median(times[label])
        rows.append(
            {
                "label": label,
                "scheme": scheme,
                "options": options,
                "seconds_per_epoch": seconds,
                "all_seconds": times[label],
                "relative_to_lp_at_linf": seconds / reference,
                "images": records[label]["images"],
                "passes_per_image": records[label]["passes_per_image"],
            }
        )
    rows.sort(key=lambda r: (r.get("relative_to_lp_at_linf", float("inf")), r["label"]))

    table = Table(title=f"One epoch per scheme, relative to {REFERENCE} (l-inf)", title_justify="left")
    for column in ("scheme", "s / epoch", "relative", "attack fwd/bwd per image", "update fwd/bwd per image"):
        table.add_column(column, justify="left" if column == "scheme" else "right")
    for row in rows:
        if "error" in row:
            table.add_row(row["label"], "-", "-", "-", f"failed: {row['error']}")
            continue
        p = row["passes_per_image"]
        table.add_row(
            row["label"],
            f"{row['seconds_per_epoch']:.2f}",
            f"{row['relative_to_lp_at_linf']:.2f}",
            f"{p['attack_forward']:.0f} / {p['attack_backward']:.0f}",
            f"{p['update_forward']:.0f} / {p['update_backward']:.0f}",
        )
    console.print(table)

    if args.json_out is not None:
        machine = {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": sys.version.split()[0],
        }
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        payload = {"date": _dt.date.today().isoformat(), "machine": machine, "settings": settings, "results": rows}
        args.json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        err.print(f"Wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
