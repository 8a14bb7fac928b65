"""Run every benchmark: the build first (it also makes the datasets), then the mount."""

from __future__ import annotations

import argparse

from benchmarks import build, mount


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: a check in minutes")
    args = p.parse_args()
    flags = ["--quick"] if args.quick else []
    build.main(flags)
    mount.main(flags)


if __name__ == "__main__":
    main()
