"""A deterministic simulation of membership plus replication (the issue's 50-member run).

The real member runtime (grid/) drives the sans-IO cores with asyncio and gRPC; this
package drives the same cores -- `membership.node.Node`, `partitioning.build_table`,
`replication.stream`, `replication.hlc`, `replication.digest` -- in virtual time on
`membership.simnet.SimNetwork`, with a small, faithful model of the replication
protocol around them (`simulation/replica.py`). Everything is seeded: a run is a pure
function of its seed and parameters, so a failing seed replays exactly.

Modules: `store` (the per-member record store model, LWW), `wire` (message encoding),
`replica` (one member's replication model), `faults` (the seeded fault schedule),
`invariants` (what is checked during and after a run), `world` (the wiring), `run` (CLI).
"""
