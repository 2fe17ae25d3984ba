"""``offload fleet`` refuses bad options with one line and a non-zero exit, before any server."""

from __future__ import annotations

import pytest

from offload.cli import main


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--hosts", "0"], "positive host counts"),
        (["--hosts", "ten"], "positive host counts"),
        (["--time-factor", "-1"], "above 0"),
        (["--replicas", "0"], "at least 1"),
    ],
)
def test_bad_options(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", *argv]) != 0
    err = capsys.readouterr().err
    assert words in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


def test_negative_write_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "--write-rate", "-2"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--write-rate" in err[0]
