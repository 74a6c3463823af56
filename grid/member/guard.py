"""The member's side of TLS and the cluster token (grid/wire/security.py has the rules).

- `LoginInterceptor`: gRPC calls without the token (`authorization: Bearer`) or a
  user's password (`authorization: Basic`) are refused UNAUTHENTICATED before any
  handler runs, except the standard health service, which probes (Kubernetes, docker
  HEALTHCHECK) must reach without secrets: it says only SERVING or not. The data plane
  checks the same login in its Hello, with the same `Credentials.check`.
- `reload_loop`: certificates are replaced on disk by renewal tools (cert-manager,
  certbot); every RELOAD_CHECK_S the member looks at the files' times and loads a
  changed pair, without a restart. A pair that does not load (a key half-written) is
  logged and retried next time; the old one stays in use meanwhile.
- `exposure_warning`: a member listening beyond loopback with neither TLS nor a token is
  an open data store to its network; it says so loudly in its log at start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from grid import logs
from grid.config import Config
from grid.wire.security import Credentials, ServerTls, login_of

log = logs.get("grid.member.guard")

RELOAD_CHECK_S = 10.0
OPEN_TO_PROBES = "/grpc.health.v1.Health/"


class LoginInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.refused = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_TO_PROBES):
            return handler
        user, secret = login_of(details.invocation_metadata) or ("", b"")
        why = self.credentials.check(user, secret)
        if not why:
            return handler
        self.refused += 1
        log.warning("gRPC call refused", method=details.method, user=user, reason=why)
        return _refusal(handler, f"authentication failed: {why} (auth_token, users)")


def _refusal(handler: grpc.RpcMethodHandler, why: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that refuses the call."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)
        yield  # an async generator, as a streaming handler must be

    plain = {"request_deserializer": handler.request_deserializer,
             "response_serializer": handler.response_serializer}  # fmt: skip
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **plain)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **plain)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **plain)
    return grpc.stream_stream_rpc_method_handler(streaming, **plain)


def server_tls(config: Config) -> ServerTls | None:
    if not config.tls_cert:
        return None
    try:
        return ServerTls(config.tls_cert, config.tls_key, config.tls_ca)
    except (ssl.SSLError, OSError) as e:
        raise OSError(
            f"cannot load tls_cert {config.tls_cert!r} and tls_key {config.tls_key!r}: {e}"
        ) from e


async def reload_loop(tls: ServerTls) -> None:
    while True:
        await asyncio.sleep(RELOAD_CHECK_S)
        if not tls.changed():
            continue
        try:
            tls.reload()
        except (ssl.SSLError, OSError) as e:
            log.warning("new certificate not loaded; the old one stays", error=str(e))
            continue
        log.info("certificate reloaded", cert=tls.cert)


def exposure_warning(config: Config) -> str:
    """The warning for a member open to its network, or "" when it is not."""
    if config.tls_cert or config.credentials().required or _loopback(config.host):
        return ""
    return (
        f"listening on {config.host} with neither TLS nor a token: anyone who can reach "
        "these ports can read and change every entry (set tls_cert/tls_key and auth_token; "
        "docs/operations.md, Security)"
    )


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable
