"""Unit tests of the link's toxics: durations, rates, pacing and the cut, on given times."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from offload.cli import main
from offload.errors import ConfigError
from offload.link.toxics import Gate, Pace, Toxics, parse_duration, parse_rate
from offload.testbed.files import NativeState, save_state


class Extremes(random.Random):
    """uniform() answers the bounds in turn: high, low, high, ..."""

    def __init__(self) -> None:
        super().__init__(0)
        self.calls = 0

    def uniform(self, a: float, b: float) -> float:
        self.calls += 1
        return b if self.calls % 2 else a


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("40ms", 0.04), ("5s", 5.0), ("1.5s", 1.5), ("250us", 0.00025), ("0", 0.0), ("50", 0.05)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["fast", "-5ms", "5 minutes", ""])
def test_bad_duration_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration") as caught:
        parse_duration(text, option="--delay")
    assert "--delay" in str(caught.value)
    assert caught.value.hint is not None and "40ms" in caught.value.hint


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("2mbit", 250_000.0), ("500kbit", 62_500.0), ("1mb", 1_000_000.0), ("8", 1.0)],
)
def test_rates_in_bytes_per_second(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["0mbit", "fast", "-1mbit", "2 furlongs"])
def test_bad_rate(text: str) -> None:
    with pytest.raises(ConfigError, match="not a rate"):
        parse_rate(text)


def test_toxics_refuse_negative_or_unknown() -> None:
    with pytest.raises(ConfigError):
        Toxics(delay=-0.01)
    with pytest.raises(ConfigError):
        Toxics(rate=0.0)
    with pytest.raises(ConfigError, match="unknown toxic"):
        Toxics().merged({"latency": 1})


def test_merge_keeps_what_is_not_named() -> None:
    toxics = Toxics(delay=0.04, rate=1000.0).merged({"jitter": 0.005})
    assert toxics == Toxics(delay=0.04, jitter=0.005, rate=1000.0)
    assert toxics.active
    assert not Toxics().active
    assert toxics.describe() == "delay 40ms, jitter 5ms, rate 0.008mbit"
    assert Toxics().describe() == "none"


def test_no_toxic_releases_at_once() -> None:
    pace = Pace()
    assert pace.release_at(10.0, 1500, Toxics()) == 10.0
    assert pace.release_at(10.5, 1, Toxics()) == 10.5


def test_delay_shifts_every_chunk() -> None:
    pace = Pace()
    toxics = Toxics(delay=0.05)
    assert pace.release_at(1.0, 100, toxics) == pytest.approx(1.05)
    assert pace.release_at(1.01, 100, toxics) == pytest.approx(1.06)


def test_jitter_never_reorders() -> None:
    pace = Pace(Extremes())
    toxics = Toxics(delay=0.05, jitter=0.02)
    first = pace.release_at(0.0, 10, toxics)  # 0 + 50 + 20 ms
    second = pace.release_at(0.001, 10, toxics)  # 1 + 50 - 20 ms: would overtake the first
    third = pace.release_at(0.100, 10, toxics)  # 100 + 50 + 20 ms
    assert first == pytest.approx(0.070)
    assert second == pytest.approx(first)  # held behind it (TCP keeps order)
    assert third == pytest.approx(0.170)


def test_jitter_larger_than_delay_floors_at_zero() -> None:
    pace = Pace(Extremes())
    pace.release_at(0.0, 1, Toxics(delay=0.01, jitter=0.03))
    assert pace.release_at(5.0, 1, Toxics(delay=0.01, jitter=0.03)) == pytest.approx(5.0)


def test_rate_serialises_then_idles() -> None:
    pace = Pace()
    toxics = Toxics(rate=1000.0)  # bytes per second
    assert pace.release_at(0.0, 1000, toxics) == pytest.approx(1.0)
    assert pace.release_at(0.0, 500, toxics) == pytest.approx(1.5)  # queued behind the first
    assert pace.release_at(10.0, 100, toxics) == pytest.approx(10.1)  # the wire was idle


def test_rate_then_delay() -> None:
    pace = Pace()
    toxics = Toxics(delay=0.04, rate=250_000.0)  # 2mbit
    assert pace.release_at(0.0, 25_000, toxics) == pytest.approx(0.1 + 0.04)


def test_clearing_toxics_keeps_order_of_what_was_delayed() -> None:
    pace = Pace()
    delayed = pace.release_at(0.0, 10, Toxics(delay=1.0))
    after_clear = pace.release_at(0.5, 10, Toxics())
    assert after_clear == delayed == pytest.approx(1.0)


def test_cut_closes_the_gate_then_it_opens_by_itself() -> None:
    gate = Gate()
    assert gate.is_open(0.0)
    gate.cut(100.0, 5.0)
    assert not gate.is_open(100.0)
    assert not gate.is_open(104.999)
    assert gate.remaining(102.0) == pytest.approx(3.0)
    assert gate.is_open(105.0)
    assert gate.remaining(106.0) == 0.0


def test_reopen_ends_a_cut() -> None:
    gate = Gate()
    gate.cut(0.0, 60.0)
    gate.reopen()
    assert gate.is_open(1.0)
    with pytest.raises(ConfigError):
        gate.cut(0.0, -1.0)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["link", "set", "replica0", "--delay", "fast"], "not a duration"),
        (["link", "set", "replica0"], "nothing to set"),
        (["link", "set", "replica0", "--rate", "0mbit"], "not a rate"),
        (["link", "cut", "replica0", "--for", "soon"], "not a duration"),
        (["link", "clear", "replica0"], "no testbed"),
        (["link", "show"], "no testbed"),
        (["link", "cut", "replica0"], "--for"),
        (["link", "set", "replica0", "--delay", "5ms"], "no testbed"),
    ],
)
def test_link_usage_errors_are_one_line(
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name in list(os.environ):
        if name.startswith("OFFLOAD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    status = main([*argv, "--dir", str(tmp_path)])
    _, err = capsys.readouterr()
    assert status != 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("offload: error:"), err
    assert says in lines[0]


def test_show_without_links(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    save_state(tmp_path, NativeState(flavor="mariadb", primary_port=33061, replica_ports=(33062,)))
    assert main(["link", "show", "--dir", str(tmp_path)]) == 0
    assert "no link" in capsys.readouterr().out
