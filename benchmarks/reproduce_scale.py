"""Claim (b) against the fine-tuning budget: E-AT on more training images, otherwise reproduce.py's setting.

    OMP_NUM_THREADS=1 python benchmarks/reproduce_scale.py --out ~/.cache/robustft-reproduce/scale-10k --n-train 10000

One seed of E-AT, 3 epochs on the first ``--n-train`` training images (reproduce.py: 2,000), evaluated with
the reduced protocol on the same 500 test points as reproduce.py's table. Copy ``base-eval.json`` from one of
reproduce.py's groups into ``--out`` first to skip the base's evaluation. Resumable as ``robustft compare``.
A ``scale-*`` folder inside reproduce.py's ``--out`` is read by its claim (b), whose verdict names the budget
from which the claim holds; the result is also quoted in benchmarks/reproduction_reading.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import reproduce  # noqa: E402

from robustft.compare import compare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-train", type=int, default=10_000)
    default_data = Path.home() / ".cache" / "robustft-data" / "cifar10-jpeg"
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ROBUSTFT_CIFAR10_JPEG", default_data)))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    settings = reproduce.table_settings(reproduce.FULL, f"imagefolder:{args.data}", reproduce.host(), args.device)
    report = compare("e-at", seeds=1, out=args.out, options={}, **{**settings, "n_train": args.n_train})
    print(json.dumps({"base": report.base, "rows": [row.as_dict() for row in report.rows]}, indent=2))


if __name__ == "__main__":
    main()
