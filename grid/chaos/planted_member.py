"""`python -m grid.chaos.planted_member node ...`: a member with a planted bug.

The chaos harness's own test: a run whose members carry one of the simulator's planted
bugs (simulation/plants.py, named by the GRID_TEST_PLANT environment variable) must
make a checker fail. The plant patches the production cores in this process only, for
the life of the member; `python -m grid` never reads the variable, so a member started
the ordinary way runs exactly the production code.
"""

from __future__ import annotations

import os
import sys

from grid.chaos.backends import PLANT_ENV


def main() -> int:
    from grid.cli.main import main as grid_main
    from simulation.plants import PLANTS, planted

    name = os.environ.get(PLANT_ENV, "")
    if name not in PLANTS:
        print(f"planted_member: {PLANT_ENV}={name!r} names no plant", file=sys.stderr)
        return 2
    print(f"planted_member: running with the planted bug {name!r}", file=sys.stderr)
    with planted(name):
        return grid_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
