"""Link faults as nftables rules and a tc rate limit, run inside a network namespace.

The netns backend (grid/harness/netns.py) and the compose backend (grid/chaos/compose.py)
degrade links the same way; only how they enter a member's namespace differs (`ip netns
exec NS`, or `nsenter -t PID -n` for a container). So the rules are written here once,
as chains of one table per purpose, and applied through a command prefix:

- `apply(prefix, chains, table)` replaces the table with these chains (name -> body);
- `delete(prefix, table)` removes it (a namespace that dies takes its tables along);
- the chains: `loss` (a share of packets dropped at random, each way: this kernel has
  no netem, so `numgen random`), `deaf` (packets from some addresses dropped on the way
  in: a one-way cut), `cut` (to and from some addresses, both ways: a split made of
  rules, where no bridge can be re-wired);
- `tbf(kbit)`: the tc arguments of a rate limit with a 200 ms queue (a slow link).

Which packets a rule matches is the caller's `match`: an interface (`iifname "eth0"`)
where members have a cluster link of their own, or peer addresses (`ip saddr { ... }`)
where one link carries both the cluster's and the clients' traffic, so clients are
spared.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

FAULT_TABLE = "grid_chaos"
"""Degraded links (loss, a one-way cut) in a member's namespace."""
SPLIT_TABLE = "grid_split"
"""A split made of rules (compose); kept apart so a heal leaves degraded links be."""


class RuleError(RuntimeError):
    pass


Match = tuple[str, str]
"""(inbound, outbound): the nft expressions that pick the packets a fault applies to."""


def on_interface(name: str) -> Match:
    return f'iifname "{name}"', f'oifname "{name}"'


def with_peers(addresses: Sequence[str]) -> Match:
    peers = ", ".join(addresses)
    return f"ip saddr {{ {peers} }}", f"ip daddr {{ {peers} }}"


def loss(percent: int, match: Match) -> dict[str, str]:
    """`percent`% of the matched packets dropped each way, at random."""
    if not 0 < percent < 100:
        raise ValueError(f"percent must be 1..99, not {percent}")
    inbound, outbound = match
    return {
        "inbound": f"type filter hook input priority 0; policy accept; "
        f"{inbound} numgen random mod 100 < {percent} drop",
        "outbound": f"type filter hook output priority 0; policy accept; "
        f"{outbound} numgen random mod 100 < {percent} drop",
    }


def deaf(sources: Sequence[str]) -> dict[str, str]:
    """Packets from `sources` dropped on the way in (they still hear this member; TCP
    either way fails, since half of each handshake is lost)."""
    if not sources:
        raise ValueError("deafen needs another member to stop hearing")
    return {
        "inbound": "type filter hook input priority 0; policy accept; "
        f"ip saddr {{ {', '.join(sources)} }} drop",
    }


def cut(peers: Sequence[str]) -> dict[str, str]:
    """No packet to or from `peers`: this member's side of a split."""
    inbound, outbound = with_peers(peers)
    return {
        "inbound": f"type filter hook input priority 0; policy accept; {inbound} drop",
        "outbound": f"type filter hook output priority 0; policy accept; {outbound} drop",
    }


def tbf(kbit: int) -> list[str]:
    """`tc qdisc replace dev DEV root` + these: at most `kbit` kbit/s, a queue of up to
    200 ms of traffic, so a busy link is slow before it drops."""
    if kbit <= 0:
        raise ValueError(f"kbit must be positive, not {kbit}")
    burst = max(2, kbit // 8)  # kbyte: one tick's worth at this rate, at least a frame
    return ["tbf", "rate", f"{kbit}kbit", "burst", f"{burst}kb", "latency", "200ms"]


def script(chains: dict[str, str], table: str = FAULT_TABLE) -> str:
    return (
        f"table inet {table} {{\n"
        + "".join(f"  chain {name} {{ {body}; }}\n" for name, body in chains.items())
        + "}\n"
    )


def apply(prefix: Sequence[str], chains: dict[str, str], table: str = FAULT_TABLE) -> None:
    """Replace `table` with `chains` in the namespace that `prefix` enters."""
    delete(prefix, table)
    text = script(chains, table)
    nft = subprocess.run(
        [*prefix, "nft", "-f", "-"], input=text, capture_output=True, text=True, timeout=30
    )
    if nft.returncode:
        raise RuleError(f"nft in `{' '.join(prefix)}` refused {text!r}: {nft.stderr.strip()}")


def delete(prefix: Sequence[str], table: str = FAULT_TABLE) -> None:
    """Remove `table` if it is there (no error when it is not)."""
    subprocess.run(
        [*prefix, "nft", "delete", "table", "inet", table], capture_output=True, timeout=30
    )


def throttle(prefix: Sequence[str], device: str, kbit: int) -> None:
    tc = subprocess.run(
        [*prefix, "tc", "qdisc", "replace", "dev", device, "root", *tbf(kbit)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if tc.returncode:
        raise RuleError(f"tc in `{' '.join(prefix)}` failed: {tc.stderr.strip()}")


def unthrottle(prefix: Sequence[str], device: str) -> None:
    subprocess.run(
        [*prefix, "tc", "qdisc", "del", "dev", device, "root"], capture_output=True, timeout=30
    )
