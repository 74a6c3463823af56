"""What a test needs from the machine, and skips that are loud under CI=true.

Some tests need things pip cannot bring: a redis-server, `ip` for network namespaces,
root to mount a tiny tmpfs. `make test` installs the Debian packages listed in
.ci/system-packages.txt when a command is missing and it runs as root (.ci/system-packages),
so on CI, which runs `make test` as root on a fresh machine, nothing there should be
missing. A test asks for such a command with `command(name)`:

- present: its path;
- missing, and the test command could have installed it (listed, root, apt-get) while
  CI=true: the test FAILS, saying what is missing. A skip there would hide a broken
  install step, and the suite would go green with the tests that matter never run;
- otherwise (a developer without root, a package the list does not name): a skip that
  says which Debian package brings it.

Whatever else cannot be had (root, a kernel that refuses `mount` or `ip netns add`) is
an ordinary `pytest.skip`. Under CI=true every skip of the session is listed once more
at the very end, in a block of its own just above pytest's closing line, so that no
skip passes unseen in a long CI log (`-ra` alone puts them among the other short
summary lines). Loaded by tests/conftest.py as a plugin.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

LIST = Path(__file__).resolve().parent.parent / ".ci" / "system-packages.txt"
SEARCHED = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""Besides $PATH: a non-root PATH may lack the sbin folders, where `ip` lives."""


@functools.cache
def system_packages() -> dict[str, str]:
    """command -> the Debian package that brings it, as .ci/system-packages.txt lists them."""
    found: dict[str, str] = {}
    for line in LIST.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            found[fields[0]] = fields[1]
    return found


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def could_install() -> bool:
    """Whether `make test` could have installed a listed package on this machine."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def command(name: str) -> str:
    """The path of `name`; if it is missing, skip the test, or fail it (see the module doc)."""
    path = shutil.which(name) or next(
        (p for d in SEARCHED if os.access(p := os.path.join(d, name), os.X_OK)), None
    )
    return path if path is not None else missing(name)


def missing(name: str) -> NoReturn:
    """`name` is not on this machine: skip, or fail where the test command should have
    installed it (CI=true, listed, root with apt-get)."""
    package = system_packages().get(name)
    if package is None:
        pytest.skip(f"{name} is not installed (not in .ci/system-packages.txt)")
    if under_ci() and could_install():
        pytest.fail(
            f"{name} is missing although the test command installs it as root "
            f"(Debian package {package}, .ci/system-packages): the install step failed "
            "or did not run; see its line before the tests",
            pytrace=False,
        )
    pytest.skip(
        f"{name} is not installed (Debian package {package}; `make test` as root installs it)"
    )


def root(why: str) -> None:
    """Skip unless this process is root (`why`: what needs it, as the skip reason)."""
    if os.geteuid() != 0:
        pytest.skip(f"{why} needs root")


# ---- the loud list of skips under CI=true ------------------------------------------------------
def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> object:
    """Outermost wrapper: the block comes after `-ra`'s short summary, just above the
    closing line, where a reader of a CI log looks."""
    result = yield
    if under_ci():
        skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.skipped]
        if skipped:
            terminalreporter.section(
                f"{len(skipped)} SKIPPED UNDER CI=true: these tests did not run",
                red=True,
                bold=True,
            )
            for report in skipped:
                terminalreporter.write_line(
                    f"SKIPPED {report.nodeid}: {_reason(report)}", yellow=True
                )
            terminalreporter.write_line(
                "(docs/testing.md: what `make test` installs; a missing install fails instead)"
            )
        else:
            terminalreporter.write_line("CI=true: no test skipped", green=True)
    return result
