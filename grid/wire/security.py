"""TLS and the cluster token, for both ends of every connection a client or member opens.

One `Security` value says what a side presents and what it trusts:

- `cert`, `key`: PEM files of this side's certificate chain and private key. A member
  serves them on gRPC and the data plane; a client, or a member dialling a peer,
  presents them when the other side asks for one (mutual TLS).
- `ca`: a PEM bundle of the certificate authorities trusted. A client verifies the
  member's certificate against it (host name included); a member given one requires
  every client and peer to present a certificate it signed (mutual TLS). A client that
  sets `tls=True` without a `ca` trusts the system's store, as any HTTPS client does.
- `token`: the cluster's shared secret. Clients and peers send it in the data plane's
  Hello (`auth`) and in gRPC metadata (`authorization: Bearer ...`); a member that has
  one refuses a connection or call without it, comparing in constant time.

Nothing here opens a socket: the data plane, the sync client's sockets, the async
client and the member's peers each build their context from here, so the rules cannot
drift apart. Contexts are made once per connection pool, not per connection (loading
a CA bundle costs milliseconds).

Certificate reload: `ServerTls.reload()` loads the files again into the same SSL
context, which new data-plane handshakes use from then on; gRPC asks `grpc_fetcher`
at every handshake and gets the new files once they changed. Connections already open
keep the certificate they started with, as with nginx or Redis.
"""

from __future__ import annotations

import hmac
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN_METADATA = "authorization"


@dataclass(frozen=True)
class Security:
    cert: str = ""
    key: str = ""
    ca: str = ""
    token: str = ""
    tls: bool = False
    """Client side: use TLS even without a `ca` (the system's trust store)."""

    @property
    def client_tls(self) -> bool:
        return bool(self.tls or self.ca or self.cert)

    def client_context(self) -> ssl.SSLContext | None:
        """What a client or a dialling member wraps its sockets in; None: plain TCP."""
        if not self.client_tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key or None)
        return ctx

    def grpc_channel_credentials(self) -> Any:
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca),
            private_key=_read(self.key) if self.cert else None,
            certificate_chain=_read(self.cert),
        )

    def grpc_metadata(self) -> tuple[tuple[str, str], ...] | None:
        return ((TOKEN_METADATA, f"Bearer {self.token}"),) if self.token else None

    def hello_auth(self) -> bytes:
        return self.token.encode()


PLAIN = Security()
"""No TLS, no token: loopback and trusted networks, and every default."""


def token_matches(expected: str, given: bytes | str) -> bool:
    """Constant-time comparison, so a refusal takes as long whatever the guess."""
    if isinstance(given, str):
        given = given.encode()
    return hmac.compare_digest(expected.encode(), given)


def bearer(metadata: Any) -> str:
    """The token of an `authorization: Bearer ...` gRPC metadata entry, or ""."""
    for key, value in metadata or ():
        if key == TOKEN_METADATA and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


class ServerTls:
    """A member's side: the data plane's SSL context and gRPC's credentials, reloadable."""

    def __init__(self, cert: str, key: str, ca: str = "") -> None:
        self.cert, self.key, self.ca = cert, key, ca
        # not create_default_context: it would also trust the system's CAs for client
        # certificates, letting in anyone with a certificate from a public CA
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if ca:
            self.context.load_verify_locations(cafile=ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._stamp = (0.0, 0.0)
        self._served: tuple[float, float] | None = None  # the files gRPC was last given
        self.reload()

    def _mtimes(self) -> tuple[float, float]:
        return os.stat(self.cert).st_mtime, os.stat(self.key).st_mtime

    def changed(self) -> bool:
        try:
            return self._mtimes() != self._stamp
        except OSError:
            return False  # a file being replaced: the next check sees the new one

    def reload(self) -> None:
        """Load the certificate and key again (raises ssl.SSLError or OSError if they are
        not a pair; the context then keeps the old ones)."""
        stamp = self._mtimes()
        self.context.load_cert_chain(self.cert, self.key)
        self._stamp = stamp

    def grpc_credentials(self) -> Any:
        import grpc

        return grpc.dynamic_ssl_server_credentials(
            self._grpc_config(),
            self._grpc_fetch,
            require_client_authentication=bool(self.ca),
        )

    def _grpc_config(self) -> Any:
        import grpc

        self._served = self._stamp
        return grpc.ssl_server_certificate_configuration(
            [(_read(self.key), _read(self.cert))], root_certificates=_read(self.ca)
        )

    def _grpc_fetch(self) -> Any:
        """gRPC asks at every handshake: a new configuration once the files changed."""
        if self._served == self._stamp:
            return None
        return self._grpc_config()


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None
