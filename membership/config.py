"""Protocol tunables, with the reason behind every default.

The starting point is HashiCorp memberlist's LAN profile (DefaultLANConfig):
probe every 1 s with a 500 ms timeout, 3 indirect checks, suspicion
multiplier 4 x log10(N) probe intervals (max 6x that without confirmations),
gossip every 200 ms to 3 members, retransmit multiplier 4, push-pull every
30 s.  A data grid on a LAN has tighter product goals than Consul's service
catalogue (grid's design card): a kill -9 must be seen as dead by every member
within 6 s, five members must converge within 3 s of the last start and a
graceful leave must be seen within 1 s.  The changes below buy that with a
little more steady-state traffic, which on a LAN is negligible (two ~40-byte
datagrams per member per probe interval).  docs/membership.md records the
measured effect of these numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Config:
    """Tunables of one member.  Times are seconds of the injected clock."""

    # --- failure detection -------------------------------------------------
    probe_interval: float = 0.5
    """One protocol period.  memberlist LAN uses 1 s; halving it halves the
    time to notice a crash (the suspicion timeout is also counted in periods)
    at the cost of 2 extra small datagrams per member per second."""

    probe_timeout: float = 0.25
    """Wait for a direct ack before asking others (ping-req).  Kept at half the
    period as in memberlist: LAN round trips are < 1 ms, but a Python member's
    event loop can stall for tens of ms under load, and Lifeguard stretches
    this further when the local member is the slow one."""

    indirect_checks: int = 3
    """k members asked to ping-req a target that missed its direct ack.  SWIM's
    and memberlist's value: 3 independent paths make a lossy link alone very
    unlikely to cause a suspicion (0.19^3 at 5% loss per hop)."""

    tcp_fallback_probe: bool = True
    """Also ping a silent target over the stream kind (TCP), as memberlist does:
    it survives UDP being filtered or lossy while TCP still works."""

    suspicion_mult: int = 4
    """Suspicion timeout = suspicion_mult x max(1, log10(N)) x probe_interval
    (memberlist).  With 0.5 s periods: 2 s for N <= 10, 4 s at 100, 6 s at
    1000.  This is the time a suspected member has to refute before it is
    declared dead, so it must cover a GC pause or a short stall."""

    suspicion_max_timeout_mult: int = 3
    """Lifeguard: a suspicion starts at max = this x the timeout above and
    shrinks to the timeout as independent confirmations arrive.  memberlist
    uses 6; 3 keeps the worst case (a crash seen by few members) inside the
    6 s product goal for small clusters, while confirmations still make the
    common case fast."""

    awareness_max_multiplier: int = 8
    """Lifeguard local health: probe interval and timeout are scaled by up to
    this factor when the member itself misses acks/nacks or has to refute
    suspicions (memberlist's value)."""

    # --- dissemination ------------------------------------------------------
    gossip_interval: float = 0.2
    """Gossip tick (memberlist LAN).  Gossip is only sent when there is
    something to say, so an idle cluster pays nothing for it."""

    gossip_nodes: int = 3
    """Members gossiped to per tick (memberlist LAN): an update reaches
    everyone in O(log N) ticks."""

    gossip_to_the_dead_time: float = 30.0
    """Keep gossiping to members recently marked dead/left so a falsely
    accused member learns of it quickly and refutes (memberlist)."""

    retransmit_mult: int = 4
    """Each update is piggybacked retransmit_mult x ceil(log10(N+1)) times
    (memberlist's TransmitLimitedQueue): enough for epidemic spread with high
    probability, bounded so the queue drains."""

    push_pull_interval: float = 30.0
    """Full state exchange with one random member over the stream kind
    (memberlist LAN), scaled up above 32 members.  It repairs whatever gossip
    missed and heals partitions; joins do one immediately."""

    join_retry_interval: float = 0.5
    """Retry joining the seeds this often until one answers.  Short because
    members of a cluster often start together and the seed may be second."""

    join_sync_delay: float = 1.0
    """After joining, do one more push-pull with a random member this much
    later: members that joined concurrently are missing from the seed's
    answer, and gossip alone may take long to fill them in under loss (an
    update is retransmitted only 4 times in a 5-member cluster).  This is
    what keeps "5 members converge within 3 s" true at 5% loss."""

    leave_fanout: int = 16
    """A leaving member sends its leave directly to this many members besides
    gossiping it, so a graceful leave is seen by all within ~1 gossip tick."""

    accuser_grace: float = 10.0
    """A "dead" verdict whose accuser we have seen alive for less than this (or not
    at all) is taken as a suspicion. After a short partition heals, the side that
    was cut off still gossips the deaths it declared while alone; accepted as they
    are, healthy members of the other side are declared dead and fail over,
    though they refute within a moment (the 3-member simulation: 22 of 40 heals
    after a 4 s split). As a suspicion, the accused refutes before the timeout."""

    reconnect_interval: float = 2.0
    """How often a push-pull goes to one member we think is dead (if any).
    After a partition heals, both sides have declared the other dead and no
    probe or gossip crosses any more: this is what finds the other side, so
    it bounds how long a heal goes unnoticed. Serf reconnects every 30 s; a
    data grid whose replicas diverge while split wants to merge sooner, and a
    push-pull to a truly dead address is one failed TCP connect."""

    reconnect_timeout: float = 86400.0
    """Dead members are remembered this long and occasionally contacted by
    push-pull (Serf's reconnect), which is what merges a healed partition
    after both sides have declared the other dead.  Serf's default."""

    left_retention: float = 300.0
    """Members that left gracefully are remembered this long so stale gossip
    cannot resurrect them; they are not contacted."""

    # --- limits ---------------------------------------------------------------
    max_datagram_size: int = 1400
    """Largest datagram we send or accept: fits a 1500-byte Ethernet MTU after
    IP/UDP headers and the transport's authentication tag."""

    max_stream_size: int = 8 * 1024 * 1024
    """Largest stream message (push-pull carries the whole member list, about
    100 bytes a member): room for tens of thousands of members, yet bounded."""

    # --- Lifeguard switches (for benchmarks/ablation; keep them on) ----------
    lifeguard_awareness: bool = True
    """Local health awareness and nacks."""

    lifeguard_dynamic_suspicion: bool = True
    """Suspicion timeouts that shrink with confirmations; off = fixed timeout."""

    lifeguard_buddy: bool = True
    """Tell a suspected member it is suspected, inside the probe to it."""

    def __post_init__(self) -> None:
        positive = (
            "probe_interval",
            "probe_timeout",
            "gossip_interval",
            "push_pull_interval",
            "reconnect_interval",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("probe_timeout must be shorter than probe_interval")
        for name in ("indirect_checks", "gossip_nodes", "retransmit_mult", "leave_fanout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise ValueError("suspicion multipliers must be >= 1")
        if self.awareness_max_multiplier < 1:
            raise ValueError("awareness_max_multiplier must be >= 1")
        if not 200 <= self.max_datagram_size <= 65507:
            raise ValueError("max_datagram_size must be in [200, 65507]")

    def without_lifeguard(self) -> Config:
        """Plain SWIM: the baseline the Lifeguard paper compares against."""
        return replace(
            self,
            lifeguard_awareness=False,
            lifeguard_dynamic_suspicion=False,
            lifeguard_buddy=False,
        )

    def suspicion_timeout(self, n: int) -> float:
        """The minimum suspicion timeout for a cluster of n members."""
        return self.suspicion_mult * max(1.0, math.log10(max(1, n))) * self.probe_interval

    def retransmit_limit(self, n: int) -> int:
        """How many times one update is piggybacked in a cluster of n members."""
        return self.retransmit_mult * math.ceil(math.log10(n + 1))

    def push_pull_scaled(self, n: int) -> float:
        """memberlist's pushPullScale: slow push-pull down above 32 members so
        the total stream traffic grows like N log N rather than N^2."""
        if n <= 32:
            return self.push_pull_interval
        mult = math.ceil(math.log2(n) - math.log2(32)) + 1
        return self.push_pull_interval * mult
