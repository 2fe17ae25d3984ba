"""Which server a testbed runs: flavor specs, and servers offload provides itself.

A *flavor spec* is what a user asks for: ``mariadb``, ``mariadb-10.11``, ``mariadb-11.8``,
``mysql``, ``mysql-9.7`` (flavor, optionally the major.minor series).

A *provided server* is one Debian ships in a suite newer than the host's, which cannot be
apt-installed here (it needs a newer libc) but runs from a debootstrapped tree through that
tree's own dynamic loader.  Each is built once, as root, into the cache directory
(``$OFFLOAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/offload``, else ``~/.cache/offload``) and
reused by later runs and by ``offload testbed images``::

    CACHE/servers/mysql-9.7/
        rootfs/              debootstrap --variant=minbase sid + the pinned packages
        sbin/mysqld          launcher: the rootfs's loader, library path and data dirs
        bin/mysql            the client, the same way
        share, lib/...       links into the rootfs (a --basedir for install scripts)
        recipe               written last: what the tree was built from (a complete build)

The launchers behave like the binaries they wrap (``--version``, ``--initialize``,
``--defaults-file`` first), so the rest of the testbed treats them as an installed server.
The host's apt sources and packages are never touched.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from offload.errors import TestbedError
from offload.flavor import Flavor
from offload.testbed import rootfs as rootfs_mod
from offload.testbed.rootfs import Log, stderr_log

__all__ = [
    "FLAVOR_VARIABLE",
    "PROVIDED",
    "FlavorSpec",
    "Provided",
    "cache_dir",
    "default_flavor",
    "known_specs",
    "provided_for",
    "series_of",
]

#: bump when the recipe changes in a way the package list does not show
RECIPE_VERSION = "2"


def series_of(version: str) -> str:
    """``9.7`` of ``9.7.4-2``; ``11.8`` of ``1:11.8.9+ds-0+deb13u1`` and ``11.8.9-MariaDB``."""
    bare = version.split(":", 1)[-1]
    parts = bare.split(".")
    if len(parts) < 2 or not parts[0].isdigit():
        raise ValueError(f"not a server version: {version!r}")
    minor = "".join(ch for ch in parts[1] if ch.isdigit())
    return f"{parts[0]}.{minor}"


@dataclass(frozen=True, slots=True)
class FlavorSpec:
    """What a user asked for: a flavor and, optionally, its major.minor series."""

    flavor: Flavor
    series: str | None = None

    @classmethod
    def parse(cls, text: str) -> FlavorSpec:
        """``mariadb`` | ``mysql`` | ``mariadb-11.8`` | ``mysql-9.7``; a one-line error else."""
        name, _, series = text.strip().lower().partition("-")
        try:
            flavor = Flavor(name)
        except ValueError:
            raise TestbedError(
                f"unknown server flavor {text!r}", hint=f"use one of: {', '.join(known_specs())}"
            ) from None
        if series:
            try:
                series_ok = series_of(series) == series
            except ValueError:
                series_ok = False
            if not series_ok:
                raise TestbedError(
                    f"bad server version in {text!r}: say major.minor",
                    hint=f"use one of: {', '.join(known_specs())}",
                )
        return cls(flavor, series or None)

    def accepts(self, flavor: Flavor, version: str) -> bool:
        """True when a server of ``flavor`` and ``version`` is what was asked for."""
        if flavor is not self.flavor:
            return False
        try:
            return self.series is None or series_of(version) == self.series
        except ValueError:
            return False

    def __str__(self) -> str:
        return self.flavor.value if self.series is None else f"{self.flavor.value}-{self.series}"


@dataclass(frozen=True, slots=True)
class Provided:
    """A server offload provides from a Debian suite (a tree run through its own loader)."""

    flavor: Flavor
    series: str
    suite: str
    #: package -> the exact Debian version it is pinned to
    packages: tuple[tuple[str, str], ...]
    #: the server binary and its client inside the tree
    server: str
    client: str
    #: extra programs wrapped like the server (install scripts' helpers)
    helpers: tuple[str, ...] = ()
    #: an install script run with the host's /bin/sh and ``--basedir`` = the launcher dir
    install_script: str | None = None

    @property
    def key(self) -> str:
        return f"{self.flavor.value}-{self.series}"

    @property
    def image(self) -> str:
        """The local Docker image of this server (``offload testbed images``)."""
        return f"offload-{self.flavor.value}:{self.series}"

    @property
    def spec(self) -> FlavorSpec:
        return FlavorSpec(self.flavor, self.series)

    def recipe(self) -> str:
        pins = [f"{name}={version}" for name, version in self.packages]
        text = "\n".join([RECIPE_VERSION, self.suite, platform.machine(), *pins])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def home(self, cache: Path | None = None) -> Path:
        return (cache or cache_dir()) / "servers" / self.key

    def server_path(self, cache: Path | None = None) -> Path:
        return self.home(cache) / "sbin" / Path(self.server).name

    def client_path(self, cache: Path | None = None) -> Path:
        return self.home(cache) / "bin" / Path(self.client).name

    def rootfs(self, cache: Path | None = None) -> Path:
        return self.home(cache) / "rootfs"

    def is_built(self, cache: Path | None = None) -> bool:
        stamp = self.home(cache) / "recipe"
        try:
            return stamp.read_text(encoding="utf-8").strip() == self.recipe()
        except OSError:
            return False

    def how_to_build(self) -> str:
        return (
            f"as root on Debian/Ubuntu with debootstrap: `offload testbed server "
            f"--flavor {self.key}` (or `make server FLAVOR={self.key}`)"
        )

    def ensure(self, *, cache: Path | None = None, log: Log = stderr_log) -> Path:
        """The launcher of this server; the tree is built first when it is not cached."""
        if self.is_built(cache):
            return self.server_path(cache)
        why = _cannot_build()
        if why:
            raise TestbedError(
                f"{self.key} is not provided yet and {why}", hint=self.how_to_build()
            )
        self.build(cache=cache, log=log)
        return self.server_path(cache)

    def build(self, *, cache: Path | None = None, log: Log = stderr_log) -> None:
        """debootstrap the suite, install the pinned packages, write the launchers."""
        started = time.monotonic()
        home = self.home(cache)
        home.parent.mkdir(parents=True, exist_ok=True)
        # built beside the final place, then renamed: a failed build leaves nothing half-made
        work = Path(tempfile.mkdtemp(prefix=f".{self.key}-", dir=home.parent))
        try:
            tree = work / "rootfs"
            rootfs_mod.debootstrap(tree, self.suite, log=log)
            rootfs_mod.chroot_apt_install(
                tree, [f"{name}={version}" for name, version in self.packages], log=log
            )
            for name, version in self.packages:
                found = rootfs_mod.installed_version(tree, name)
                if found != version:
                    raise TestbedError(
                        f"{self.suite} gave {name} {found or 'nothing'}, pinned to {version}"
                    )
            rootfs_mod.trim(tree)
            _add_server_account(tree)
            if home.exists():
                rootfs_mod.unmount_below(home)
                shutil.rmtree(home)
            work.rename(home)
        except BaseException:
            rootfs_mod.unmount_below(work)
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._write_launchers(home)
        (home / "recipe").write_text(self.recipe() + "\n", encoding="utf-8")
        log(f"rootfs: {self.key} ready in {home} ({time.monotonic() - started:.0f}s)")

    def _write_launchers(self, home: Path) -> None:
        tree = home / "rootfs"
        triplet, loader = _loader()
        libdir = tree / "usr" / "lib" / triplet
        share = tree / "usr" / "share" / ("mariadb" if self.flavor is Flavor.MARIADB else "mysql")
        server_extra = [
            f"--basedir={tree / 'usr'}",
            f"--lc-messages-dir={share}",
            f"--character-sets-dir={share / 'charsets'}",
            f"--plugin-dir={tree / 'usr' / 'lib' / 'mysql' / 'plugin'}",
        ]
        programs = {
            Path(self.server): server_extra,
            Path(self.client): [],
            **{Path(helper): [] for helper in self.helpers},
        }
        for program, extra in programs.items():
            where = "sbin" if program.parent.name == "sbin" else "bin"
            _write_script(
                home / where / program.name,
                [
                    f"# offload launcher: {program} of {self.key} (Debian {self.suite}) through",
                    "# the tree's own loader and libraries; options after the caller's own",
                    f"exec {_q(libdir / loader)} --library-path {_q(libdir)} "
                    f'{_q(tree / program)} "$@" {" ".join(_q(e) for e in extra)}'.rstrip(),
                ],
            )
        if self.install_script:
            script = Path(self.install_script)
            _write_script(
                home / "bin" / script.name,
                [
                    f"# offload launcher: {script} of {self.key}, with this directory as basedir",
                    f'exec /bin/sh {_q(tree / script)} "$@" --basedir={_q(home)}',
                ],
            )
        for link, target in (
            ("share", tree / "usr" / "share"),
            ("lib/mysql/plugin", tree / "usr" / "lib" / "mysql" / "plugin"),
        ):
            path = home / link
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            path.symlink_to(target)


#: Oracle MySQL and MariaDB that Debian ships but this host's release cannot install
PROVIDED: tuple[Provided, ...] = (
    Provided(
        flavor=Flavor.MYSQL,
        series="9.7",
        suite="sid",
        packages=(("mysql-server-core", "9.7.4-2"), ("mysql-client", "9.7.4-2")),
        server="usr/sbin/mysqld",
        client="usr/bin/mysql",
        helpers=("usr/bin/mysqladmin", "usr/bin/mysqlbinlog"),
    ),
    Provided(
        flavor=Flavor.MARIADB,
        series="11.8",
        suite="trixie",
        packages=(
            ("mariadb-server", "1:11.8.9+ds-0+deb13u1"),
            ("mariadb-client", "1:11.8.9+ds-0+deb13u1"),
        ),
        server="usr/sbin/mariadbd",
        client="usr/bin/mariadb",
        helpers=(
            "usr/bin/my_print_defaults",
            "usr/bin/resolveip",
            "usr/bin/mariadb-admin",
            "usr/bin/mariadb-binlog",
        ),
        install_script="usr/bin/mariadb-install-db",
    ),
)


#: the flavor every testbed of this process (and its children) runs when none is named:
#: `make ... FLAVOR=mysql` and pytest's --testbed-flavor set it
FLAVOR_VARIABLE = "OFFLOAD_FLAVOR"


def default_flavor() -> FlavorSpec | None:
    """$OFFLOAD_FLAVOR as a spec; None when unset (the host's server)."""
    chosen = os.environ.get(FLAVOR_VARIABLE, "").strip()
    return FlavorSpec.parse(chosen) if chosen else None


def known_specs() -> list[str]:
    return sorted({"mariadb", "mariadb-10.11", "mysql", *(p.key for p in PROVIDED)})


def provided_for(spec: FlavorSpec) -> Provided | None:
    """The provided server that answers ``spec`` (the newest of its flavor when no series)."""
    for provided in PROVIDED:
        if provided.flavor is spec.flavor and spec.series in (None, provided.series):
            return provided
    return None


def cache_dir() -> Path:
    chosen = os.environ.get("OFFLOAD_CACHE_DIR")
    if chosen:
        return Path(chosen)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "offload"


def _cannot_build() -> str:
    """Why this machine cannot build a tree ('' when it can)."""
    if os.geteuid() != 0:
        return "building it needs root (debootstrap, chroot)"
    if shutil.which("apt-get") is None:
        return "building it needs Debian's tools (no apt-get here)"
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        return "debootstrap is not installed (`apt-get install debootstrap`)"
    return ""


def _loader() -> tuple[str, str]:
    """(multiarch triplet, dynamic loader) of this machine."""
    machine = platform.machine()
    known = {
        "x86_64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
        "aarch64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1"),
    }
    if machine not in known:
        raise TestbedError(f"provided servers run on x86_64 and aarch64, not {machine}")
    return known[machine]


def _q(value: object) -> str:
    text = str(value)
    return "'" + text.replace("'", "'\\''") + "'"


def _write_script(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["#!/bin/sh", *lines, ""]), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _add_server_account(tree: Path) -> None:
    """The ``mysql`` user and the dirs a container needs (mysql-server-core has neither)."""
    passwd, group = tree / "etc" / "passwd", tree / "etc" / "group"
    if not any(line.startswith("mysql:") for line in passwd.read_text().splitlines()):
        with group.open("a", encoding="utf-8") as out:
            out.write("mysql:x:999:\n")
        with passwd.open("a", encoding="utf-8") as out:
            out.write("mysql:x:999:999:MySQL Server:/nonexistent:/usr/sbin/nologin\n")
    for relative in ("var/lib/mysql", "var/lib/mysql-files", "run/mysqld"):
        directory = tree / relative
        directory.mkdir(parents=True, exist_ok=True)
        uid_gid = _uid_gid(tree, "mysql")
        os.chown(directory, *uid_gid)


def _uid_gid(tree: Path, user: str) -> tuple[int, int]:
    for line in (tree / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise TestbedError(f"no {user} user in {tree}")
