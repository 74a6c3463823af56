"""Run the simulation from a shell.

    python -m simulation.run --seed 7                       # 50 members, 10 minutes
    python -m simulation.run --seeds 1-20 --members 20 --minutes 3
    python -m simulation.run --seed 7 --no-persist          # crashes lose memory
    python -m simulation.run --plant list                   # the bugs that can be planted
    python -m simulation.run --plant skip-tenth --seeds 1-20  # each seed must fail

Prints one summary per seed (trace hash, stats, wall time); a failing seed prints
the violated invariant and the command that replays it. Exit status 1 if any
seed failed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from grid.logs import configure as configure_logs
from simulation.plants import PLANTS, listing, planted
from simulation.world import SimConfig, World


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m simulation.run", description=__doc__)
    ap.add_argument("--seeds", help="several seeds: 1-20 or 1,5,9")
    for f in fields(SimConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction)
        else:
            kind = {"int": int, "float": float}[str(f.type)]
            ap.add_argument(flag, dest=f.name, type=kind)
    ap.add_argument("--log", action="store_true", help="print the fault log")
    ap.add_argument(
        "--plant",
        metavar="NAME",
        help="run with a known bug planted (simulation/plants.py); 'list' lists them",
    )
    return ap


def configs(args: argparse.Namespace) -> list[SimConfig]:
    """One config per seed asked for; unset flags keep SimConfig's defaults."""
    base = {f.name: getattr(args, f.name) for f in fields(SimConfig)}
    base = {k: v for k, v in base.items() if v is not None}
    seed = base.pop("seed", 0)
    seeds = parse_seeds(args.seeds) if args.seeds else [seed]
    return [SimConfig(seed=s, **base) for s in seeds]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.plant == "list":
        print(listing())
        return 0
    if args.plant and args.plant not in PLANTS:
        print(f"no plant {args.plant!r}; python -m simulation.run --plant list", file=sys.stderr)
        return 2
    failed = 0
    for cfg in configs(args):
        with planted(args.plant):
            result = World(cfg).run()
        if args.log:
            print("\n".join(result.log))
        print(result.summary(args.plant), flush=True)
        failed += not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    configure_logs(level="warning")  # the members' recovery and journal lines: not wanted here
    sys.exit(main())
