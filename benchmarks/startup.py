"""Start-up time of the ``robustft`` command, each call in a fresh process, side by side in one run.

    python benchmarks/startup.py [--repeats 7] [--json-out FILE]

Rows: ``--version``; ``--help`` with the plugin-command manifest in the cache (every start after the first);
``--help`` without it (the plugins load once and the manifest is written); and ``list schemes``, a command
that needs the plugins, as the reference for what loading them costs. The target for the first two is
0.5 s. Each row is the median wall time of ``--repeats`` runs, the rows interleaved round-robin so that a
busy moment of the machine spreads over all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.5
ROWS = {
    "--version": (["--version"], True),
    "--help (manifest cached)": (["--help"], True),
    "--help (first start: plugins load)": (["--help"], False),
    "list schemes (plugins load)": (["list", "schemes"], True),
}


def robustft_command() -> list[str]:
    script = shutil.which("robustft")
    return [script] if script else [sys.executable, "-m", "robustft"]


def run_once(args: list[str], cache: Path, keep_manifest: bool) -> float:
    if not keep_manifest:
        (cache / "plugin-commands.json").unlink(missing_ok=True)
    env = {**os.environ, "ROBUSTFT_CACHE": str(cache)}
    tic = time.perf_counter()
    done = subprocess.run([*robustft_command(), *args], capture_output=True, env=env)
    elapsed = time.perf_counter() - tic
    if done.returncode != 0:
        sys.exit(f"robustft {' '.join(args)} failed: {done.stderr.decode()[-300:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder)
        run_once(["--help"], cache, True)  # warm the file-system cache and write the manifest once
        for _ in range(args.repeats):
            for name, (argv, keep) in ROWS.items():
                times[name].append(run_once(argv, cache, keep))
                if not keep:
                    run_once(["--help"], cache, False)  # leave a manifest for the next row
    result = {
        "command": robustft_command(),
        "repeats": args.repeats,
        "load_average": os.getloadavg(),
        "median_s": {name: statistics.median(values) for name, values in times.items()},
        "target_s": TARGET_S,
    }
    for name, value in result["median_s"].items():
        target = " (target 0.5 s: met)" if value <= TARGET_S else " (target 0.5 s: missed)"
        print(f"{name:40s} {value:6.3f} s{target if 'plugins load' not in name else ''}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
