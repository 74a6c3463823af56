"""Messages of the simulated replication protocol, as msgpack bytes.

They travel as bytes on the same `SimNetwork` as membership's datagrams, so the
network's trace hash covers them too (a replay is checked byte for byte), and
nothing is shared by reference between simulated members.

Shapes (lists):

- WRITE `[W, req, key, value|None, hops]` client -> member; WRITE_REPLY
  `[WR, req, status, ts, member, hint]` (status OK / NOT_OWNER, hint = owner name).
- SYNC_WRITE `[SW, req, op, key, arg]` client -> member, a write to the sync-backup map
  (op: the store's PUT with the value, DELETE, or INCR by the delta); SYNC_REPLY
  `[SWR, req, status, ts, member, hint, counter]` once its sync backups applied it
  (status OK / NOT_OWNER / UNCONFIRMED: applied, not confirmed in time; counter: an
  incr's result).
- CLEAR `[CL]` client -> every running member: clear the plain map (each member
  clears the partitions it serves, as a member forwarding a client's clear has every
  member do); not answered.
- STREAM `[S, epoch, chunks]` primary -> follower, one per `Primary.drain`; a chunk
  is `[kind, p, seq, records, term, epoch, error]`, the fields of
  `replication.primary.Chunk` (proto/grid.proto's Chunk); records have the store's
  shape `[op, map, key, value, ts, member, expire_at, max_idle]`.
- FOLLOW `[F, epoch, subscribe [[p, term, seq, all_maps]], unsubscribe [p],
  acks [[p, seq]], taken_over [p]]` follower -> primary (with nothing to say: a
  keepalive).
- AE_ROOTS `[AR, round, cut, [[p, root]]]` primary -> backup; AE_BUCKETS
  `[AB, round, cut, [[p, packed]]]` back for partitions whose roots differ;
  AE_RECORDS `[AX, round, [[p, buckets, recs]], reply]` both ways.
- PUSH `[P, p, recs, root]` a member holding a copy it has no role for -> the
  primary; PUSH_ACK `[PA, p, root]` once merged (the holder drops its copy if it is
  still the one pushed).
- REQUEST `[RQ, id, method, args]` and RESPONSE `[RS, id, result]`: the peer RPCs of
  the coordinator's runtime (grid's unary Peer calls), simulation/rpc.py. Methods and
  shapes: TABLE `[]` -> `[version]` (0: no table); PUBLISH `[version]` -> `[version
  held after]`; FILL `[partitions, source]` -> `[failed]`; HANDOFF `[partitions, to,
  confirm_epoch]` -> `[failed]`; LEAVE `[member]` -> `[done, error, coordinator]`. A
  table travels as its version (epoch and content fingerprint, so the trace covers
  its content); the receiver reads it from the world's registry of published tables,
  which stands in for decoding the table message.
"""

from __future__ import annotations

from typing import Any

import msgpack

# message kinds
W, WR, S, F, AR, AB, AX, P, PA, RQ, RS, SW, SWR, CL = range(14)
# RPC methods
TABLE, PUBLISH, FILL, HANDOFF, LEAVE = range(5)
# write statuses
OK, NOT_OWNER, UNCONFIRMED = 0, 1, 2


def pack(msg: list[Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def unpack(data: bytes) -> list[Any]:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
