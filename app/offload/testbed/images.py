"""Local images for machines with no image registry: ``offload testbed images``.

=========================  ==================================================================
``offload-mariadb:bookworm``  Debian 12 (``debootstrap --variant=minbase``) with MariaDB and
                              Python from Debian's packages, imported with ``docker import``:
                              the DB image of the offline compose testbed, and the base of
                              the compute image.
``offload-compute:bookworm``  ``app/Dockerfile`` on top of it, installed from the repository
                              with wheels from ``build/wheelhouse`` (downloaded on the host by
                              pip), so the build itself needs no network.
=========================  ==================================================================

Cached: every image carries a label with a hash of what it was built from, and an image
whose label matches is reused — a second run takes about a second.  The base needs root
(debootstrap); the compute image needs only the engine.  The engine is driven through the
Docker SDK (:mod:`offload.testbed.engine`): import of the tar stream, build, labels, prune.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.errors import TestbedError
from offload.testbed import engine
from offload.testbed.rootfs import (
    Log,
    debian_mirror,
    debootstrap,
    run,
    stderr_log,
    trim,
    unmount_below,
)
from offload.testbed.servers import FlavorSpec, Provided, provided_for

__all__ = [
    "BASE_IMAGE",
    "COMPUTE_IMAGE",
    "ImageResult",
    "db_image",
    "ensure_base",
    "ensure_compute",
    "ensure_db_image",
    "ensure_images",
    "find_repo",
    "image_exists",
]

#: the debootstrapped base: MariaDB + Python from Debian 12 (the offline DB image)
BASE_IMAGE = "offload-mariadb:bookworm"
#: the compute service built from app/Dockerfile on the base
COMPUTE_IMAGE = "offload-compute:bookworm"
SUITE = "bookworm"
#: the base's Python (Debian 12's python3): the wheels are downloaded for it
TARGET_PYTHON = "3.11"
BASE_PACKAGES = ("mariadb-server", "mariadb-client", "python3", "python3-venv")
#: bump when the recipe changes in a way the package list does not show
RECIPE_VERSION = "1"
LABEL = "org.offload.recipe"
WHEELHOUSE = Path("build") / "wheelhouse"

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: bytes per chunk of the root file system's tar stream sent to the engine
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One image: reused from the engine's cache or built now, and how long that took."""

    name: str
    built: bool
    seconds: float

    def describe(self) -> str:
        verb = "built" if self.built else "cached"
        return f"{self.name:<28} {verb} ({self.seconds:.1f}s)"


def image_label(image: str) -> str | None:
    """The recipe label of a local image; None when the engine has no such image."""
    return engine.image_label(image, LABEL)


def image_exists(image: str) -> bool:
    return image_label(image) is not None


def image_id(image: str) -> str:
    return engine.image_id(image)


def find_repo() -> Path:
    """The repository root: the directory holding docker-compose.yml, app/ and mysql/."""
    from offload.testbed.mysqld import find_mysql_dir  # noqa: PLC0415

    repo = find_mysql_dir().parent
    if not (repo / "app" / "Dockerfile").is_file():
        raise TestbedError(
            f"{repo} has no app/Dockerfile",
            hint="run from the offload repository or set OFFLOAD_MYSQL_DIR",
        )
    return repo


# --- the base: debootstrap + docker import -----------------------------------


def base_recipe() -> str:
    text = "\n".join([RECIPE_VERSION, SUITE, *BASE_PACKAGES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _debootstrap(rootfs: Path, mirror: str, log: Log) -> None:
    debootstrap(rootfs, SUITE, include=BASE_PACKAGES, mirror=mirror, log=log)
    trim(rootfs)


def _import(rootfs: Path, name: str, recipe: str, log: Log) -> None:
    """``docker import`` of a tree (tar of it, numeric owners) with our label and PATH."""
    log(f"images: docker import {name}")
    with subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
    ) as tar:
        assert tar.stdout is not None
        stream = tar.stdout
        try:
            engine.import_image(
                iter(lambda: stream.read(_CHUNK), b""),
                name,
                changes=[
                    f"LABEL {LABEL}={recipe}",
                    f"ENV PATH={_PATH}",
                    "ENV LANG=C.UTF-8",
                    'CMD ["/bin/bash"]',
                ],
            )
        finally:
            stream.close()
    if tar.returncode != 0:
        raise TestbedError(f"tar of {rootfs} failed (exit {tar.returncode})")


def ensure_base(*, rebuild: bool = False, log: Log = stderr_log) -> ImageResult:
    """The base image, from the cache when its recipe label matches; else debootstrapped."""
    started = time.monotonic()
    recipe = base_recipe()
    if not rebuild and image_label(BASE_IMAGE) == recipe:
        return ImageResult(BASE_IMAGE, built=False, seconds=time.monotonic() - started)
    if os.geteuid() != 0:
        raise TestbedError(
            f"building {BASE_IMAGE} needs root (debootstrap)",
            hint="run `sudo make images` once; later runs reuse the image",
        )
    work = Path(tempfile.mkdtemp(prefix="offload-rootfs-", dir=os.environ.get("TMPDIR")))
    try:
        rootfs = work / "rootfs"
        _debootstrap(rootfs, debian_mirror(), log)
        _import(rootfs, BASE_IMAGE, recipe, log)
        _prune()
    finally:
        unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)
    return ImageResult(BASE_IMAGE, built=True, seconds=time.monotonic() - started)


# --- the compute image: wheels on the host, docker build offline -------------


def _dependencies(repo: Path) -> list[str]:
    project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
    build = project.get("build-system", {}).get("requires", [])
    return [*project["project"]["dependencies"], *build, "wheel"]


def _wheel_platforms() -> list[str]:
    machine = platform.machine() or "x86_64"
    # manylinux2014 is manylinux_2_17; Debian 12 has glibc 2.36
    return [
        f"manylinux2014_{machine}",
        *(f"manylinux_2_{minor}_{machine}" for minor in range(17, 37)),
        f"linux_{machine}",
    ]


def ensure_wheelhouse(repo: Path, *, log: Log = stderr_log) -> Path:
    """build/wheelhouse: wheels of every dependency for the base's Python (pip, on the host).

    A stamp holds the hash of the requirement list: unchanged requirements, no pip run.
    """
    wheelhouse = repo / WHEELHOUSE
    requirements = _dependencies(repo)
    digest = hashlib.sha256(
        "\n".join([TARGET_PYTHON, *_wheel_platforms(), *requirements]).encode()
    ).hexdigest()
    stamp = wheelhouse / ".requirements.sha256"
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == digest:
        return wheelhouse
    wheelhouse.mkdir(parents=True, exist_ok=True)
    log(f"images: pip download wheels for Python {TARGET_PYTHON} into {WHEELHOUSE}")
    platforms = [arg for name in _wheel_platforms() for arg in ("--platform", name)]
    version = TARGET_PYTHON.replace(".", "")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--dest",
            str(wheelhouse),
            "--only-binary=:all:",
            "--python-version",
            TARGET_PYTHON,
            "--implementation",
            "cp",
            "--abi",
            f"cp{version}",
            "--abi",
            "abi3",
            "--abi",
            "none",
            *platforms,
            *requirements,
        ],
        what="pip download (the wheelhouse)",
        timeout=1800,
    )
    stamp.write_text(digest + "\n", encoding="utf-8")
    return wheelhouse


def _source_files(repo: Path) -> list[Path]:
    files = [
        repo / "app" / "Dockerfile",
        repo / ".dockerignore",
        repo / "pyproject.toml",
        repo / "README.md",
    ]
    package = repo / "app" / "offload"
    files += sorted(
        p
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    return [p for p in files if p.is_file()]


def compute_recipe(repo: Path, base: str) -> str:
    """Hash of everything the compute image is built from (sources, Dockerfile, base id)."""
    digest = hashlib.sha256(image_id(base).encode())
    for path in _source_files(repo):
        digest.update(str(path.relative_to(repo)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_compute(
    repo: Path,
    *,
    base: str = BASE_IMAGE,
    name: str = COMPUTE_IMAGE,
    rebuild: bool = False,
    log: Log = stderr_log,
) -> ImageResult:
    """The compute image on ``base``, from local wheels; reused while its sources are unchanged."""
    started = time.monotonic()
    recipe = compute_recipe(repo, base)
    if not rebuild and image_label(name) == recipe:
        return ImageResult(name, built=False, seconds=time.monotonic() - started)
    ensure_wheelhouse(repo, log=log)
    log(f"images: docker build {name} (app/Dockerfile on {base}, no network)")
    engine.build_image(
        repo,
        dockerfile="app/Dockerfile",
        tag=name,
        buildargs={"BASE_IMAGE": base, "WHEELHOUSE": str(WHEELHOUSE)},
        labels={LABEL: recipe},
    )
    _prune()
    return ImageResult(name, built=True, seconds=time.monotonic() - started)


def _prune() -> None:
    """Drop what earlier builds left untagged: old images of ours and build stages."""
    for label in (LABEL, "org.offload.stage=build"):
        engine.prune_images(label)


# --- DB images of provided servers: the cached tree, imported --------------


def _provided(flavor: FlavorSpec | None) -> Provided | None:
    """The provided server behind a flavor's local image; None: the base image's MariaDB."""
    if flavor is None or (flavor.flavor.value == "mariadb" and flavor.series in (None, "10.11")):
        return None
    provided = provided_for(flavor)
    if provided is None:
        raise TestbedError(
            f"no local image for {flavor}",
            hint="use mariadb, mariadb-11.8 or mysql (or set OFFLOAD_DB_IMAGE)",
        )
    return provided


def db_image(flavor: FlavorSpec | None) -> str:
    """The local DB image of a flavor: the base (Debian 12's MariaDB) or a provided server's."""
    provided = _provided(flavor)
    return BASE_IMAGE if provided is None else provided.image


def ensure_db_image(
    provided: Provided, *, rebuild: bool = False, log: Log = stderr_log
) -> ImageResult:
    """``offload-mysql:9.7`` and the like: the provided server's cached tree, imported."""
    started = time.monotonic()
    recipe = provided.recipe()
    if not rebuild and image_label(provided.image) == recipe:
        return ImageResult(provided.image, built=False, seconds=time.monotonic() - started)
    provided.ensure(log=log)
    _import(provided.rootfs(), provided.image, recipe, log)
    _prune()
    return ImageResult(provided.image, built=True, seconds=time.monotonic() - started)


def ensure_images(
    repo: Path | None = None,
    *,
    flavors: Sequence[FlavorSpec] | None = None,
    rebuild: bool = False,
    log: Log = stderr_log,
) -> list[ImageResult]:
    """The base and compute images, and the DB image of each flavor; built only when needed."""
    repo = repo or find_repo()
    base = ensure_base(rebuild=rebuild, log=log)
    compute = ensure_compute(repo, rebuild=rebuild or base.built, log=log)
    results = [base, compute]
    for flavor in flavors or ():
        provided = _provided(flavor)
        if provided is not None:
            results.append(ensure_db_image(provided, rebuild=rebuild, log=log))
    return results
