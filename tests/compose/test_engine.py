"""The engine operations offload does through the Docker SDK, on the real engine."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.testbed import engine, images
from offload.testbed.compose import ComposeTopology
from offload.testbed.topology import TestbedInfo


@pytest.fixture
def compose(offload_compose: ComposeTopology, offload_testbed: TestbedInfo) -> ComposeTopology:
    """The session's compose testbed, up."""
    return offload_compose


def test_diagnostics_show_states_the_replicas_threads_and_logs(compose: ComposeTopology) -> None:
    shown = compose.diagnostics()
    containers = shown.splitlines()[0]
    assert containers.startswith("containers: ")
    assert "primary" in containers and "=healthy" in containers
    status = next(line for line in shown.splitlines() if line.startswith("replica status: "))
    assert "Running: Yes" in status  # the healthcheck's verbose output, run by exec
    assert "logs (last 25 lines per container):" in shown
    assert any(" | " in line and "replica" in line.split(" | ")[0] for line in shown.splitlines())


def test_logs_of_one_service(compose: ComposeTopology) -> None:
    logs = compose.logs(tail=5, service="primary")
    names = {line.split(" | ")[0] for line in logs.splitlines()}
    assert names and all("primary" in name for name in names)
    assert len(logs.splitlines()) <= 5


@pytest.fixture
def scratch_image() -> Iterator[str]:
    name = "offload-test-import:scratch"
    yield name
    engine.client().images.remove(name, force=True)


def test_import_of_a_tar_stream_keeps_label_env_and_cmd(tmp_path: Path, scratch_image: str) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hello").write_text("hello\n")
    images._import(rootfs, scratch_image, "recipe-123", log=lambda line: None)
    assert images.image_label(scratch_image) == "recipe-123"
    config = engine.client().images.get(scratch_image).attrs["Config"]
    assert "LANG=C.UTF-8" in config["Env"]
    assert any(e.startswith("PATH=/usr/local/sbin:") for e in config["Env"])
    assert config["Cmd"] == ["/bin/bash"]
    exported = tmp_path / "exported.tar"
    with exported.open("wb") as out:
        for chunk in engine.client().images.get(scratch_image).save():
            out.write(chunk)
    with tarfile.open(exported) as saved:
        (layer,) = [m for m in saved.getmembers() if m.name.endswith("layer.tar")]
        extracted = saved.extractfile(layer)
        assert extracted is not None
        with tarfile.open(fileobj=extracted) as tree:  # the tree, as tar sent it
            hello = tree.extractfile("./etc/hello") or tree.extractfile("etc/hello")
            assert hello is not None and hello.read() == b"hello\n"
    assert images.image_label("offload-test-import:never-built") is None
