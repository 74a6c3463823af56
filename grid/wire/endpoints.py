"""Where to dial a member's data plane, from what its Endpoints reply says.

A member derives its data-plane address from its own advertise address unless the
operator set `data_advertise`. The derived host is the one other members use, and a
client may have reached the member another way: through a NAT, a published docker
port on another host name, or (in the chaos harness) a link in another network
namespace. So a derived address contributes only its port, and the host is the one the
client just reached gRPC at; an address the operator set is dialled as given.
"""

from __future__ import annotations


def split_address(address: str) -> tuple[str, int]:
    """host:port (IPv6 hosts may be bracketed) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


def data_plane_target(dialed: str, data_address: str, advertised: bool) -> tuple[str, int]:
    """(host, port) to connect to for a member reached at `dialed` (its gRPC address)."""
    host, port = split_address(data_address)
    if advertised:
        return host, port
    return split_address(dialed)[0], port


def data_plane_address(dialed: str, data_address: str, advertised: bool) -> str:
    """data_plane_target as a host:port string (IPv6 hosts bracketed)."""
    host, port = data_plane_target(dialed, data_address, advertised)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
