"""robustft's benchmarks in one command: a rich table on stdout and a JSON file.

    python benchmarks/run.py [--device cpu|cuda] [--json-out FILE] [--sections attacks,efficiency,schemes,eval]

Sections (each comparison is measured side by side in the same run):

* ``attacks``: our APGD against pyautoattack's, per norm, on the digits CNN and on a CIFAR-sized
  PreAct-ResNet-like net: time ratio (target <= 1.0) and points broken (target: at least as many);
* ``efficiency``: (k+1) x clean step / k-step adversarial training step (target >= 0.9);
* ``schemes``: one epoch of every installed scheme relative to l-inf AT and to "matched" single-norm
  AT (the lp-AT epochs weighted by the share of points E-AT attacked in each norm), and peak memory
  (target for E-AT: within 5% of matched AT);
* ``eval``: test points per second of the E-AT evaluation protocol per norm.

These are benchmarks, not tests: nothing fails, the table marks each target met or missed. Run it on a
quiet machine (the load average is recorded) with ``OMP_NUM_THREADS`` set to the cores you want used.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

SECTIONS = ("attacks", "efficiency", "schemes", "eval")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (auto: cuda when present)")
    p.add_argument("--json-out", type=Path, default=None, help="JSON file (default benchmarks/results-<device>.json)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run (figures are not comparable)")
    p.add_argument("--repeats", type=int, default=2, help="timed repetitions per measurement (the fastest counts)")
    p.add_argument("--attack-steps", type=int, default=20, help="APGD steps in the attack comparison")
    p.add_argument("--attack-seeds", type=int, default=5, help="random-start seeds whose broken points are summed")
    p.add_argument("--digits-n", type=int, default=500, help="digits test points per attack batch")
    p.add_argument("--cifar-n", type=int, default=64, help="CIFAR-sized points per batch")
    p.add_argument("--cifar-width", type=int, default=16, help="base width of the PreAct-ResNet-like net (64: ResNet-18)")
    p.add_argument("--train-steps", type=int, default=10, help="attack steps k in training")
    p.add_argument("--train-batch", type=int, default=128, help="training batch size")
    p.add_argument("--n-train", type=int, default=1437, help="digits training points per scheme epoch (1437: all)")
    p.add_argument("--scheme-repeats", type=int, default=3, help="fresh-process runs per scheme, round-robin (the median counts)")
    p.add_argument("--eval-n", type=int, default=200, help="test points in the evaluation throughput")
    p.add_argument("--eval-steps", type=int, default=20, help="APGD steps in the evaluation throughput (the protocol: 100)")
    p.add_argument("--worker-scheme", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.attack_steps, args.digits_n, args.cifar_n, args.cifar_width = 1, 5, 64, 8, 8
        args.attack_seeds, args.scheme_repeats = 1, 1
        args.train_steps, args.n_train, args.eval_n, args.eval_steps = 3, 128, 40, 5
    return args


def machine(device: torch.device) -> dict[str, Any]:
    info = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def mark(ok: bool | None) -> str:
    return "" if ok is None else ("[green]met[/]" if ok else "[red]missed[/]")


_TEXT_COLUMNS = ("workload", "norm", "scheme")


def _table(title: str, columns: tuple[str, ...]) -> Table:
    """A table whose name columns are left-aligned and whose figures are right-aligned."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in _TEXT_COLUMNS else "right")
    return table


def render(results: dict[str, Any], console: Console) -> None:
    m = results["machine"]
    console.print(
        f"[bold]robustft benchmarks[/] on {m['device']} ({m.get('gpu') or m['processor']}, {m['cpu_count']} CPUs, "
        f"{m['torch_threads']} torch threads, load {m['load_average_1_5_15']}) — torch {m['torch']}"
    )
    if "attacks" in results:
        seeds = results["attacks"][0].get("seeds", 1) if results["attacks"] else 1
        t = _table(
            f"APGD-CE: robustft vs pyautoattack (same model, batch, steps, device; broken: sum over {seeds} seed(s))",
            ("workload", "norm", "batch", "steps", "ours s", "pyautoattack s", "ratio", "broken ours", "broken theirs", "target"),
        )
        for r in results["attacks"]:
            ok = r["time_ratio"] <= 1.0 and r["broken_ours"] >= r["broken_pyautoattack"] and r["outside_ball_ours"] == 0
            t.add_row(
                r["workload"],
                r["norm"],
                str(r["batch"]),
                str(r["steps"]),
                f"{r['seconds_ours']:.3f}",
                f"{r['seconds_pyautoattack']:.3f}",
                f"{r['time_ratio']:.2f}",
                str(r["broken_ours"]),
                str(r["broken_pyautoattack"]),
                mark(ok),
            )
        console.print(t)
    if "efficiency" in results:
        t = _table(
            "Adversarial-training efficiency: (k+1) x clean step / k-step l-inf AT step (target >= 0.9)",
            ("workload", "batch", "k", "clean step s", "AT step s", "efficiency", "target"),
        )
        for r in results["efficiency"]:
            t.add_row(
                r["workload"],
                str(r["batch"]),
                str(r["attack_steps"]),
                f"{r['seconds_clean_step']:.4f}",
                f"{r['seconds_adversarial_step']:.4f}",
                f"{r['efficiency']:.2f}",
                mark(r["efficiency"] >= 0.9),
            )
        console.print(t)
    if "schemes" in results:
        t = _table(
            "One epoch per scheme (digits default), relative to single-norm AT (E-AT target: <= 1.05 of matched AT)",
            ("scheme", "seconds", "images", "vs linf-at", "vs matched lp-AT", "peak MiB", "peak - before MiB", "target"),
        )
        for r in results["schemes"]:
            if "error" in r:
                t.add_row(r["scheme"], "[red]failed[/]", "", "", "", "", "", r["error"][:60])
                continue
            rel = r.get("relative_to_linf_at")
            mix = r.get("relative_to_matched_at")
            target = mark(mix <= 1.05) if r["scheme"] == "e-at" and mix is not None else ""
            t.add_row(
                r["scheme"],
                f"{r['seconds']:.2f}",
                str(r["images"]),
                f"{rel:.2f}" if rel else "",
                f"{mix:.2f}" if mix else "",
                f"{r['peak_memory_mib']:.0f}",
                f"{r['peak_increase_mib']:.1f}",
                target,
            )
        console.print(t)
    if "eval" in results:
        t = _table(
            "Evaluation throughput, E-AT protocol per norm (digits CNN)",
            ("norm", "points", "steps", "seconds", "images/s", "clean", "robust"),
        )
        for r in results["eval"]:
            t.add_row(
                r["norm"],
                str(r["n"]),
                str(r["steps"]),
                f"{r['seconds']:.2f}",
                f"{r['images_per_s']:.1f}",
                f"{r['clean']:.3f}",
                f"{r['robust']:.3f}",
            )
        console.print(t)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device_name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device_name == "cuda" and not torch.cuda.is_available():
        Console(stderr=True).print("[red]--device cuda was asked for, but this machine has no CUDA GPU.[/]")
        return 2
    device = torch.device(device_name)

    import training  # after sys.path holds benchmarks/

    if args.worker_scheme:  # one scheme's epoch in a fresh process; its JSON on the last line of stdout
        row = training.scheme_epoch(
            args.worker_scheme, device=device_name, n_train=args.n_train, batch_size=args.train_batch, steps=args.train_steps
        )
        sys.stdout.write(json.dumps(row) + "\n")
        return 0

    import attacks
    import common
    import evaluation

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        Console(stderr=True).print(f"[red]Unknown section {unknown[0]!r}: choose from {', '.join(SECTIONS)}.[/]")
        return 2
    log = Console(stderr=True)
    results: dict[str, Any] = {
        "machine": machine(device),
        "settings": {k: v for k, v in vars(args).items() if k != "json_out" and k != "worker_scheme"},
    }
    workloads = []
    if "attacks" in sections or "efficiency" in sections:
        workloads = [common.digits_workload(device, args.digits_n), common.cifar_workload(device, args.cifar_n, args.cifar_width)]
        results["workloads"] = {w.name: w.description for w in workloads}
    if "attacks" in sections:
        log.print("attacks: APGD vs pyautoattack ...")
        results["attacks"] = [
            row for w in workloads for row in attacks.compare_apgd(w, device, args.attack_steps, args.repeats, args.attack_seeds)
        ]
    if "efficiency" in sections:
        log.print("efficiency: clean vs adversarial training steps ...")
        results["efficiency"] = [
            training.efficiency(
                common.Workload(w.name, w.model, w.x[: args.train_batch], w.y[: args.train_batch], w.eps, w.description),
                device,
                args.train_steps,
                args.repeats,
            )
            for w in workloads
        ]
    if "schemes" in sections:
        log.print("schemes: one epoch each, in fresh processes ...")
        results["schemes"] = training.schemes(device, args.n_train, args.train_batch, args.train_steps, repeats=args.scheme_repeats)
    if "eval" in sections:
        log.print("eval: E-AT protocol throughput ...")
        results["eval"] = evaluation.throughput(device, args.eval_n, args.eval_steps, batch_size=500)
    render(results, Console(width=None if sys.stdout.isatty() else 160))
    out = args.json_out or HERE / f"results-{device.type}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    log.print(f"JSON written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
