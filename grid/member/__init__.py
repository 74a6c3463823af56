"""The member runtime: a `grid node` process, or the member inside an embedded `grid.Node`.

It carries out what the cores decide and decides nothing of the protocol
(DESIGN.md, "Sans-IO cores"); docs/architecture.md maps each core to its shell.

- member.py: start and stop one member (gossip, store, journal, services);
- runtime.py: the cluster's data on this member, one object the services reach;
- server.py, executor.py: the client services and the batch executor over the store;
- forwarding.py, peer.py, peers.py: operations for other members, member-to-member calls;
- replicas/: shells of `replication/` (primary streams, followers, anti-entropy,
  read repair, stream positions);
- placement/: shells of `partitioning/` (the coordinator, the routing table);
- gossip/: the shell of `membership/` over UDP.

Nothing is imported here: `grid.member.member` loads gRPC.
"""
