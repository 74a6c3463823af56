"""Connection commands: PING, ECHO, QUIT, SELECT, HELLO, AUTH, RESET, CLIENT.

They touch no data: each answers from the connection's own state. HELLO switches
the connection between RESP2 and RESP3 and answers the server's description as a
map. AUTH (alone or inside HELLO) checks the password against the member's
auth_token, as `requirepass` does on Redis, for the `default` user, and the member's
`users` against their own passwords, as Redis ACL users; without a token AUTH answers
Redis's own error for a server with no password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid import __version__, logs
from grid.frontends.ops import Close, Reply
from grid.frontends.resp.common import NOT_INTEGER, SYNTAX, int_arg
from grid.frontends.resp.replies import OK, PONG, RESP2, RESP3, bulk, error, integer, simple
from grid.frontends.resp.table import NO_KEYS, command

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

log = logs.get("grid.frontends.resp")

REDIS_VERSION = "7.0.15"
"""The Redis version grid answers as: the one whose semantics it implements (clients
such as redis-py and redis-cli choose features by it)."""
BAD_NAME = error("ERR Client names cannot contain spaces, newlines or special characters.")


def ping(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) > 2:
        return error("ERR wrong number of arguments for 'ping' command")
    return PONG if len(args) == 1 else bulk(args[1])


def echo(c: RespConnection, args: list[bytes]) -> Reply:
    return bulk(args[1])


def quit_(c: RespConnection, args: list[bytes]) -> Reply:
    return Close(OK)


def select(c: RespConnection, args: list[bytes]) -> Reply:
    n = int_arg(args[1])
    if n is None or not -(1 << 31) <= n < (1 << 31):
        return NOT_INTEGER
    if n != 0:
        return error("ERR DB index is out of range")
    return OK


WRONGPASS = error("WRONGPASS invalid username-password pair or user is disabled.")


def _password_ok(c: RespConnection, user: bytes, password: bytes) -> bool:
    """Redis's `default` user: with no token it is `nopass` (any password), as on a Redis
    without requirepass; with one, the password must be the token. The member's `users`
    log in with their own passwords, as Redis ACL users do."""
    logins = c.config.credentials()
    if not logins.required:
        return user == b"default"
    return not logins.check(user.decode(errors="replace"), password)


def auth(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) > 3:
        return SYNTAX
    if not c.config.auth_token and len(args) == 2:
        return error(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        )
    user, password = (b"default", args[1]) if len(args) == 2 else (args[1], args[2])
    if not _password_ok(c, user, password):
        log.warning("RESP AUTH refused", peer=c.peer, user=user.decode(errors="replace"))
        return WRONGPASS
    c.authenticated = True
    return OK


def hello(c: RespConnection, args: list[bytes]) -> Reply:
    version = 0
    i = 1
    if len(args) >= 2:
        v = int_arg(args[1])
        if v is None:
            return error("ERR Protocol version is not an integer or out of range")
        if v < 2 or v > 3:
            return error("NOPROTO unsupported protocol version")
        version = v
        i = 2
    name = None
    auth_pair: tuple[bytes, bytes] | None = None
    while i < len(args):
        more = len(args) - 1 - i
        opt = args[i].lower()
        if opt == b"auth" and more >= 2:
            auth_pair = (args[i + 1], args[i + 2])
            i += 3
        elif opt == b"setname" and more >= 1:
            name = args[i + 1]
            if not valid_name(name):
                return BAD_NAME
            i += 2
        else:
            return error(f"ERR Syntax error in HELLO option '{args[i].decode(errors='replace')}'")
    if auth_pair is not None:
        if not _password_ok(c, *auth_pair):
            return WRONGPASS
        c.authenticated = True
    elif not c.authenticated:
        return error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO AUTH <user> <pass> option can be used to authenticate the client "
            "and select the RESP protocol version at the same time"
        )
    if version:
        c.enc = RESP3 if version == 3 else RESP2
    if name is not None:
        c.name = name
    enc = c.enc
    return enc.map(
        [
            (bulk(b"server"), bulk(b"redis")),
            (bulk(b"version"), bulk(REDIS_VERSION.encode())),
            (bulk(b"proto"), integer(enc.protocol)),
            (bulk(b"id"), integer(c.id)),
            (bulk(b"mode"), bulk(b"standalone")),
            (bulk(b"role"), bulk(b"master")),
            (bulk(b"modules"), enc.array([])),
        ]
    )


def reset(c: RespConnection, args: list[bytes]) -> Reply:
    c.enc = RESP2
    c.name = b""
    c.server.subs.drop(c)  # RESET leaves every channel and pattern, as Redis
    return simple("RESET")


def valid_name(name: bytes) -> bool:
    """Redis's rule: printable ASCII without spaces ('!' to '~')."""
    return all(33 <= ch <= 126 for ch in name)


# ---- CLIENT ---------------------------------------------------------------------------------
def client_id(c: RespConnection, args: list[bytes]) -> Reply:
    return integer(c.id)


def client_getname(c: RespConnection, args: list[bytes]) -> Reply:
    return c.enc.bulk_or_null(c.name or None)


def client_setname(c: RespConnection, args: list[bytes]) -> Reply:
    if not valid_name(args[2]):
        return BAD_NAME
    c.name = args[2]
    return OK


def client_setinfo(c: RespConnection, args: list[bytes]) -> Reply:
    attr = args[2].lower()
    if attr not in (b"lib-name", b"lib-ver"):
        return error(f"ERR Unrecognized option '{args[2].decode(errors='replace')}'")
    if not all(33 <= ch <= 126 for ch in args[3]):
        return error(f"ERR {attr.decode()} cannot contain spaces, newlines or special characters.")
    c.lib[attr.decode()] = args[3]
    return OK


def client_info(c: RespConnection, args: list[bytes]) -> Reply:
    return c.enc.verbatim(c.info_line().encode() + b"\n")


def client_list(c: RespConnection, args: list[bytes]) -> Reply:
    if len(args) > 2:
        return SYNTAX
    lines = [conn.info_line() for conn in c.listener.connections if hasattr(conn, "info_line")]
    return c.enc.verbatim("".join(line + "\n" for line in lines).encode())


def client_noop(c: RespConnection, args: list[bytes]) -> Reply:
    """CLIENT NO-EVICT / NO-TOUCH style switches: accepted, nothing to change here."""
    if args[2].lower() not in (b"on", b"off"):
        return SYNTAX
    return OK


def client_help(c: RespConnection, args: list[bytes]) -> Reply:
    lines = [
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME",
        "    Return the name of the current connection.",
        "ID",
        "    Return the ID of the current connection.",
        "INFO",
        "    Return information about the current client connection.",
        "LIST",
        "    Return information about client connections.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        f"(grid {__version__}: other CLIENT subcommands are not supported.)",
    ]
    return c.enc.array([simple(line) for line in lines])


CLIENT_SUBCOMMANDS = [
    command("client|id", 2, "noscript loading stale", NO_KEYS, "connection", client_id),
    command("client|getname", 2, "noscript loading stale", NO_KEYS, "connection", client_getname),
    command("client|setname", 3, "noscript loading stale", NO_KEYS, "connection", client_setname),
    command("client|setinfo", 4, "noscript loading stale", NO_KEYS, "connection", client_setinfo),
    command("client|info", 2, "noscript loading stale", NO_KEYS, "connection", client_info),
    command("client|list", -2, "admin noscript loading stale", NO_KEYS, "connection", client_list),
    command("client|no-evict", 3, "admin noscript loading stale", NO_KEYS, "connection",
            client_noop),
    command("client|no-touch", 3, "noscript loading stale", NO_KEYS, "connection", client_noop),
    command("client|help", 2, "loading stale", NO_KEYS, "connection", client_help),
]  # fmt: skip


def client(c: RespConnection, args: list[bytes]) -> Reply:
    raise AssertionError("dispatched to a subcommand")


COMMANDS = [
    command("ping", -1, "fast", NO_KEYS, "connection", ping),
    command("echo", 2, "fast", NO_KEYS, "connection", echo),
    command("quit", -1, "allow_busy noscript loading stale fast no_auth", NO_KEYS,
            "connection", quit_),
    command("select", 2, "loading stale fast", NO_KEYS, "connection", select),
    command("auth", -2, "noscript loading stale fast no_auth", NO_KEYS, "connection", auth),
    command("hello", -1, "noscript loading stale fast no_auth", NO_KEYS, "connection", hello),
    command("reset", 1, "noscript loading stale fast no_auth", NO_KEYS, "connection", reset),
    command("client", -2, "", NO_KEYS, "connection", client, CLIENT_SUBCOMMANDS),
]  # fmt: skip
