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

- `user`, `password`: an application's own login, one of the member's `users`, instead
  of the token. Sent in the Hello (`user`, `auth`) and in gRPC metadata as HTTP Basic.

Users, and why their passwords are SHA-256 and not a slow KDF: a member checks a login
at every connection's handshake, on its event loop, and a client opens up to 64
connections a member; scrypt at a safe cost takes 15-60 ms here, which would stall
every other connection and make a flood of wrong guesses a cheap way to stop a member.
Redis's ACL stores SHA-256 for the same reason and asks for long random passwords,
against which a fast hash loses nothing: `grid passwd` makes one (256 bits, as Redis's
ACL GENPASS) and prints the line for the config. A human's weak password is what a
slow hash protects, and has no place here.

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

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    user: str = ""
    password: str = ""

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
        if self.user:
            basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return ((TOKEN_METADATA, f"Basic {basic}"),)
        return ((TOKEN_METADATA, f"Bearer {self.token}"),) if self.token else None

    @property
    def login(self) -> tuple[str, str]:
        """(user, secret) for the Hello: a user's password, or ("", the cluster token)."""
        return (self.user, self.password) if self.user else ("", self.token)


PLAIN = Security()
"""No TLS, no token: loopback and trusted networks, and every default."""


def token_matches(expected: str, given: bytes | str) -> bool:
    """Constant-time comparison, so a refusal takes as long whatever the guess."""
    if isinstance(given, str):
        given = given.encode()
    return hmac.compare_digest(expected.encode(), given)


def login_of(metadata: Any) -> tuple[str, bytes] | None:
    """(user, secret) of an `authorization` gRPC metadata entry: `Bearer <token>` is the
    cluster token (user ""), `Basic base64(user:password)` a user's login; None if the
    call carries neither."""
    for key, value in metadata or ():
        if key != TOKEN_METADATA or not isinstance(value, str):
            continue
        if value.startswith("Bearer "):
            return "", value[len("Bearer ") :].encode()
        if value.startswith("Basic "):
            try:
                pair = base64.b64decode(value[len("Basic ") :], validate=True)
            except (binascii.Error, ValueError):
                return None
            user, sep, password = pair.partition(b":")
            if sep and user:
                return user.decode(errors="replace"), password
    return None


_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def trust_fingerprint(ca_file: str) -> str:
    """SHA-256 over the certificates of a CA bundle (their DER, sorted: the same
    authorities in another order or layout give the same value); "" for no file."""
    if not ca_file:
        return ""
    pems = _PEM_CERT.findall(Path(ca_file).read_text())
    ders = sorted(ssl.PEM_cert_to_DER_cert(p) for p in pems)
    return hashlib.sha256(b"".join(ders)).hexdigest()


HASH_PREFIX = "sha256:"


def hash_password(password: str) -> str:
    """What the config keeps of a user's password (see the module docstring on why)."""
    return HASH_PREFIX + hashlib.sha256(password.encode()).hexdigest()


def generate_password() -> str:
    """256 random bits, URL-safe: as long as Redis's ACL GENPASS makes by default."""
    return secrets.token_urlsafe(32)


def valid_password_hash(text: str) -> bool:
    digest = text[len(HASH_PREFIX) :]
    return (
        text.startswith(HASH_PREFIX)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    )


@dataclass(frozen=True)
class Credentials:
    """Who a member lets in: the cluster token (members, operators, the `default` user of
    the RESP and memcached ports) and the named users of the config."""

    token: str = ""
    users: Mapping[str, str] = field(default_factory=dict)  # name -> hash_password(...)

    @property
    def required(self) -> bool:
        return bool(self.token or self.users)

    def check(self, user: str, secret: bytes) -> str:
        """ "" when (user, secret) may in; otherwise why not, in words a log can keep (never
        saying whether the user exists: a wrong name and a wrong password read alike)."""
        if not self.required:
            return ""
        if not user or user == "default":
            if not secret:
                return "a token or a user's password is required"
            if self.token and token_matches(self.token, secret):
                return ""
            return "wrong token"
        want = self.users.get(user)
        got = hash_password(secret.decode(errors="replace"))
        if want is not None and hmac.compare_digest(want, got):
            return ""
        return "wrong user or password"


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
