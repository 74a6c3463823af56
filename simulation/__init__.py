"""A deterministic simulation of a grid cluster that runs the production code.

The real member runtime (grid/) drives the sans-IO cores with asyncio and gRPC; this
package drives the same cores -- `membership.node.Node`, `partitioning.Rebalancer` and
`partitioning.ownership.Ownership`, `replication.primary.Primary` and
`replication.follower.Follower` -- and the real `grid.store.Store`, in virtual time on
`membership.simnet.SimNetwork`. Nothing of the protocol is modelled: the modules here
are the runtime those cores have in the simulated world, as grid/ is theirs on the
real one. Everything is seeded: a run is a pure function of its seed and parameters,
so a failing seed replays exactly.

Modules: `member` (one member: store, cores, streams, peer calls, anti-entropy),
`coordinator` (the rebalancer's shell, as grid/member/placement/coordinator.py), `rpc` (peer calls
with deadlines), `tasks` (futures and generator tasks in virtual time), `wire` (message
encoding), `faults` (the seeded fault schedule), `invariants` (what is checked during
and after a run), `plants` (bugs that can be put back), `world` (the wiring), `run`
(CLI). docs/testing.md says how it works.
"""
