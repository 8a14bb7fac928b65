"""Soak: the load test of tests/test_load.py for longer, on a fresh synthetic sample.

    python tests/tools/soak.py --seconds 3600 [--images 1000] [--processes 16] [--options OPTS]

Prints the totals and exits non-zero on any error, mismatch, fd leak, or RssAnon above
cache_size plus the load test's fixed overhead. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import mounted  # noqa: E402
from tests.test_load import OVERHEAD_MIB, expected_files, make_sample, run_load  # noqa: E402
from vgfs.options import parse_options  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3600)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--processes", type=int, default=16)
    p.add_argument("--options", default="cache_size=8M,pretty")
    args = p.parse_args()
    cache_mib = parse_options([args.options]).cache_size >> 20
    with tempfile.TemporaryDirectory(prefix="vgfs-soak-") as tmp:
        release, dataset = make_sample(Path(tmp), args.images)
        expected = expected_files(release)
        with mounted(dataset, Path(tmp) / "mp", args.options) as mp:
            r = run_load(mp, dataset, expected, args.seconds, args.processes)
    peak_mib = r["peak_rss_anon_kib"] / 1024
    print(f"soak {args.seconds:.0f} s, {args.processes} readers: {r['files']} files,"
          f" {r['bytes']} bytes, {r['errors']} errors, {r['mismatches']} mismatches,"
          f" peak RssAnon {peak_mib:.1f} MiB (bound {cache_mib + OVERHEAD_MIB} MiB),"
          f" fds {r['fds_before']} -> {r['fds_after']}, daemon errors {r['stats']['errors']}")
    ok = (r["errors"] == r["mismatches"] == 0 and not r["stats"]["errors"]
          and r["fds_after"] == r["fds_before"] and peak_mib < cache_mib + OVERHEAD_MIB)
    if not ok:
        print(f"FAILED: {r['first'] or 'see the figures above'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
