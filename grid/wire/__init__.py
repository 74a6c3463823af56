"""The data plane's wire format, shared by the SDK and the member: frames (frames.py)
and where to dial a member's data plane (endpoints.py). Sans-IO: no sockets here (docs/api.md)."""
