"""Debian root filesystems built with debootstrap: one home for what the images and the
provided servers share (the mirror, debootstrap itself, apt inside the tree, trimming).

Nothing here touches the host's apt sources or packages: every ``apt-get`` runs inside the
tree (``chroot``), with the tree's own sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from offload.errors import TestbedError
from offload.urls import masked

__all__ = [
    "Log",
    "chroot_apt_install",
    "debian_mirror",
    "debootstrap",
    "installed_version",
    "run",
    "stderr_log",
    "trim",
    "unmount_below",
]

Log = Callable[[str], None]

#: what a server tree does not need: package caches, docs, translations, the package's data dir
TRIM = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "var/lib/mysql",
)


def stderr_log(line: str) -> None:
    sys.stderr.write(line + "\n")


def run(
    args: Sequence[str],
    *,
    what: str,
    timeout: float = 1800,
    stdin: int | None = None,
    env: dict[str, str] | None = None,
    log_hint: Path | None = None,
) -> str:
    """Run an argument list; a failure raises with the end of its output.

    With ``log_hint`` the failure is one line (the last output line, passwords masked) and
    the hint names the log to read; without, the last 15 lines follow the message.
    """
    try:
        result = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            stdin=stdin,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise TestbedError(f"{what} took longer than {timeout:.0f}s") from None
    except OSError as exc:
        raise TestbedError(f"{what} could not run ({exc})") from None
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()
        if log_hint is not None:
            last = masked(lines[-1].strip()) if lines else "no output"
            raise TestbedError(
                f"{what} failed (exit {result.returncode}): {last}", hint=f"see {log_hint}"
            )
        tail = "\n".join(lines[-15:])
        raise TestbedError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def debian_mirror() -> str:
    """$OFFLOAD_DEBIAN_MIRROR, else the Debian mirror apt already uses, else deb.debian.org."""
    chosen = os.environ.get("OFFLOAD_DEBIAN_MIRROR")
    if chosen:
        return chosen
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            words = path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            continue
        for word in words:
            if word.startswith(("http://", "https://")) and word.rstrip("/").endswith("/debian"):
                return word.rstrip("/")
    return "http://deb.debian.org/debian"


def unmount_below(root: Path) -> None:
    """Unmount what a failed debootstrap left mounted in the tree (proc, sys, ...)."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    targets = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for target in sorted((t for t in targets if t.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def _debootstrap_program() -> str:
    program = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(program).exists():
        raise TestbedError(
            "debootstrap is not installed", hint="apt-get install debootstrap (as root)"
        )
    return program


def debootstrap(
    rootfs: Path,
    suite: str,
    *,
    include: Sequence[str] = (),
    mirror: str | None = None,
    log: Log = stderr_log,
) -> None:
    """A minimal Debian ``suite`` in ``rootfs`` (``--variant=minbase``)."""
    if os.geteuid() != 0:
        raise TestbedError(f"building a Debian {suite} tree needs root (debootstrap)")
    mirror = mirror or debian_mirror()
    log(f"rootfs: debootstrap {suite} from {mirror} (about a minute)")
    extra = [f"--include={','.join(include)}"] if include else []
    run(
        [_debootstrap_program(), "--variant=minbase", *extra, suite, str(rootfs), mirror],
        what=f"debootstrap {suite}",
        timeout=1800,
    )


def chroot_apt_install(rootfs: Path, packages: Sequence[str], *, log: Log = stderr_log) -> None:
    """``apt-get install --no-install-recommends`` inside the tree, with the tree's sources.

    The archive snapshot's Release file may be past its Valid-Until: the tree's apt is told
    not to check it (only there — the host's apt is never touched).
    """
    log(f"rootfs: apt-get install {' '.join(packages)} in {rootfs.name}")
    resolv = rootfs / "etc" / "resolv.conf"
    if Path("/etc/resolv.conf").is_file() and not resolv.is_symlink():
        shutil.copyfile("/etc/resolv.conf", resolv)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
    }
    no_valid_until = "Acquire::Check-Valid-Until=false"
    run(
        ["chroot", str(rootfs), "apt-get", "-o", no_valid_until, "-qq", "update"],
        what=f"apt-get update in {rootfs}",
        env=env,
    )
    run(
        [
            "chroot",
            str(rootfs),
            "apt-get",
            "-o",
            no_valid_until,
            "-qq",
            "-y",
            "--no-install-recommends",
            "install",
            *packages,
        ],
        what=f"apt-get install in {rootfs}",
        env=env,
    )


def installed_version(rootfs: Path, package: str) -> str:
    """The version of ``package`` in the tree's dpkg database ('' when not installed)."""
    result = subprocess.run(
        ["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Version}", package],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def trim(rootfs: Path, relatives: Sequence[str] = TRIM) -> None:
    """Empty the directories a server tree does not need (keeping the directories)."""
    for relative in relatives:
        target = rootfs / relative
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
