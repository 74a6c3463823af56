"""The membership runtime: the sans-IO SWIM core of `membership/` on real sockets.

| module | concern |
|---|---|
| transport.py | asyncio UDP endpoint, TCP server and one-shot TCP sends, bounded frames |
| security.py | HMAC-SHA256 with the cluster secret, AES-GCM keyring, rejection counters |
| discovery.py | static seeds and a DNS name resolved to many addresses |
| runtime.py | drives `membership.Node`: inputs, timers, actions, events, leave |

What the product shows of membership (`ClusterMember`, shared with the client SDK) is
`grid/members_view.py`, outside the runtime. See docs/membership.md.
"""
