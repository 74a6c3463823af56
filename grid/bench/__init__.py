"""`grid bench`: one grid member against a real redis-server, side by side, on loopback.

The numbers are only worth something if both sides run on the same machine,
in the same minute, with the same values and the same Python client overhead
budget; so one command starts both servers, interleaves the two sides' runs
and prints the ratios next to the targets (see docs/benchmarks.md).
"""
