"""Configuration: precedence, parsing, validation, and the generated reference doc."""

from __future__ import annotations

from pathlib import Path

import pytest

from grid.config import Config, ConfigError, parse_size, reference_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_precedence_default_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "grid.toml"
    f.write_text('[member]\nmax_memory = "1MiB"\neviction_policy = "lfu"\nport = 6000\n')
    assert Config.load(env={}).max_memory == 0
    c = Config.load(file=f, env={})
    assert (c.max_memory, c.eviction_policy, c.port) == (1024**2, "lfu", 6000)
    c = Config.load(file=f, env={"GRID_MAX_MEMORY": "2MiB", "GRID_PORT": "6001"})
    assert (c.max_memory, c.eviction_policy, c.port) == (2 * 1024**2, "lfu", 6001)
    c = Config.load(
        file=f, env={"GRID_MAX_MEMORY": "2MiB"}, flags={"max_memory": "3MiB", "port": None}
    )
    assert c.max_memory == 3 * 1024**2 and c.port == 6000  # None flags do not override
    c = Config.load(env={"GRID_CONFIG": str(f)})
    assert c.eviction_policy == "lfu"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("64KiB", 65536),
        ("1kb", 1000),
        ("512MB", 512_000_000),
        ("2GiB", 2 * 1024**3),
        (" 1.5 MiB ", 1572864),
        (7, 7),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eviction_policy": "lrfu"}, "eviction_policy must be one of"),
        ({"max_memory": "lots"}, "not a size"),
        ({"port": 70000}, "not a TCP port"),
        ({"partitions": 0}, "partitions"),
        ({"max_key_bytes": 0}, "max_key_bytes must be positive"),
        ({"max_message_bytes": "1MiB"}, "max_message_bytes must exceed"),
        ({"fsync": "sometimes"}, "fsync must be one of"),
        ({"nonsense": 1}, "unknown option"),
        ({"port": "eighty"}, "port: cannot use"),
    ],
)
def test_bad_values_name_the_option(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.load(env={}, flags=options)


def test_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("max_memory = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(file=bad, env={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown option"):
        Config.load(file=unknown, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(file=tmp_path / "missing.toml", env={})


def test_reference_doc_is_generated_from_the_code() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == reference_markdown(), "run: grid config --reference > docs/configuration.md"


@pytest.mark.parametrize("command", ["node", "config", "cluster"])
def test_cli_help_renders(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse %-formats help texts; option help with a literal % once crashed it."""
    from grid.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_map_backups_widen_the_table_and_are_validated() -> None:
    from grid.member.replicas.map_backups import map_backups

    c = Config(backups=1, map_backups="cache=0, orders=2")
    assert c.backups_by_map() == {"cache": 0, "orders": 2}
    assert c.table_backups == 2
    mb = map_backups(c)
    assert not mb.uniform
    assert [mb.holds("cache", r) for r in (0, 1, 2)] == [True, False, False]
    assert [mb.holds("other", r) for r in (0, 1, 2)] == [True, True, False]
    assert [mb.holds("orders", r) for r in (0, 1, 2)] == [True, True, True]
    assert map_backups(Config(backups=2, map_backups="a=2")).uniform
    for bad in ("orders", "orders=x", "=1", "orders=7"):
        with pytest.raises(ConfigError, match="map_backups"):
            Config(map_backups=bad)


def test_read_from_backup_options_parse_and_validate() -> None:
    env = {"GRID_READ_FROM_BACKUP": "true", "GRID_READ_REPAIR_CHANCE": "0.5"}
    c = Config.load(env=env)
    assert c.read_from_backup is True and c.read_repair_chance == 0.5
    assert Config.load(env={"GRID_READ_FROM_BACKUP": "off"}).read_from_backup is False
    assert Config.load(flags={"read_from_backup": "1"}).read_from_backup is True
    with pytest.raises(ConfigError, match="read_from_backup"):
        Config.load(env={"GRID_READ_FROM_BACKUP": "maybe"})
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="read_repair_chance"):
            Config(read_repair_chance=bad)


def test_users_load_from_toml_env_and_grid_passwd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`grid passwd` prints an entry the config takes as it is; a clear password, a bad
    name or users without the token are refused, naming what is wrong."""
    from grid.cli.main import main
    from grid.wire.security import hash_password

    assert main(["passwd", "alice"]) == 0
    out = capsys.readouterr().out
    password = out.split("password: ", 1)[1].split("\n", 1)[0]
    entry = out.split("users entry: ", 1)[1].split("\n", 1)[0]
    assert len(password) >= 43 and entry == f"alice={hash_password(password)}"

    toml = tmp_path / "member.toml"
    toml.write_text(f'auth_token = "t"\n[users]\nalice = "{entry.split("=", 1)[1]}"\n')
    from_file = Config.load(file=toml, env={})
    assert not from_file.credentials().check("alice", password.encode())
    assert from_file.credentials().check("alice", b"guess") == "wrong user or password"
    from_env = Config.load(env={"GRID_AUTH_TOKEN": "t", "GRID_USERS": entry})
    assert from_env.credentials() == from_file.credentials()

    for users, token, message in (
        ("alice=hunter2", "t", "never in clear"),
        (f"default={hash_password('x')}", "t", "not `default`"),
        (f"a b={hash_password('x')}", "t", "letters, digits"),
        (entry, "", "users need auth_token"),
    ):
        with pytest.raises(ConfigError, match=message):
            Config.load(env={"GRID_AUTH_TOKEN": token, "GRID_USERS": users})


def test_memcached_is_served_where_a_token_guards_the_member() -> None:
    """memcached's text protocol logs in as `memcached -Y` does (frontends/memcached/login.py),
    so the port no longer bypasses the token."""
    assert Config(memcached_port=11211, auth_token="t").memcached_port == 11211
