"""SWIM-style membership: who is in the cluster and who is alive.

A sans-IO core (no sockets, no asyncio, no wall clock); the runtime in
`grid/` feeds it packets and timer ticks.
"""
