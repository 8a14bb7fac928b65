#!/usr/bin/env python3
"""Run every benchmark, one after another on a quiet machine: the build first (it also makes
the datasets the others read), then JPEG reads and metadata walks, the mount in place of the
release folder, the DataLoader pattern, the first answer and slow storage. Each writes its
table, plot and raw numbers to `results/` (`--quick`: `.data/quick-results/`). A benchmark
that fails is reported and the rest still run; the exit status then says so."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as `benchmarks/run.py`: import the package beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORKLOADS = ("build", "reads", "walk", "dropin", "loader", "first_answer", "slow")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: a check in minutes")
    p.add_argument("--only", nargs="+", choices=WORKLOADS, metavar="NAME",
                   help=f"run only these, of: {', '.join(WORKLOADS)}")
    args = p.parse_args(argv)
    flags = ["--quick"] if args.quick else []
    failed = []
    for name in args.only or WORKLOADS:
        start = time.monotonic()
        print(f"\n=== {name} ===", file=sys.stderr, flush=True)
        try:
            importlib.import_module(f"benchmarks.{name}").main(flags)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - one failure must not stop the rest
            if isinstance(e, SystemExit) and not e.code:
                continue
            traceback.print_exc()
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - start:.0f} s ===", file=sys.stderr, flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
