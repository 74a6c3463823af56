"""`python -m grid.bench [--quick] [--no-redis] [--only W] [--json FILE]`.

The same run as `grid bench`, plus --json for keeping results (CI, docs);
kept here so the benchmark owns its flags without touching the CLI module.
"""

from __future__ import annotations

import argparse
import sys

from grid.bench.main import run_bench
from grid.bench.workloads import BY_NAME


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grid.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    p.add_argument("--no-redis", action="store_true", help="skip the Redis side")
    p.add_argument("--only", action="append", help=f"workloads: {', '.join(BY_NAME)}")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    from grid import logs

    logs.configure("warning")
    try:
        return run_bench(args.quick, not args.no_redis, args.only, args.json)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
