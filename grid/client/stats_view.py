"""Member statistics as plain dicts, for the SDK's stats() and `grid status`."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from proto import grid_pb2 as pb


def stats_dict(reply: pb.StatsReply) -> dict[str, Any]:
    d = MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for m in [d["total"], *d["maps"]]:
        for k, v in list(m.items()):
            if k != "name":
                m[k] = int(v)  # uint64 arrives as a JSON string
        lookups = m["hits"] + m["misses"]
        m["hit_ratio"] = m["hits"] / lookups if lookups else 0.0
    for k in ("max_memory", "requests", "operations", "rejected"):
        d[k] = int(d[k])
    persistence = d.get("persistence", {})
    for f in pb.PersistenceStats.DESCRIPTOR.fields:
        if f.type == f.TYPE_UINT64 and f.name in persistence:
            persistence[f.name] = int(persistence[f.name])
    return d
