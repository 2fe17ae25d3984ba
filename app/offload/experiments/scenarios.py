"""Lag scenarios: what to inject into replication, and when.

A scenario is a list of injections on a timeline measured in seconds from the
start of the experiment.  Written as a spec string, steps joined with ``+``::

    steady                       nothing injected (a baseline)
    delay:2                      MASTER_DELAY / SOURCE_DELAY of 2 s (whole seconds), from 0 s
    delay:2@10..30               ... from 10 s, lifted at 30 s
    pause:3@5                    the replica's SQL thread stopped from 5 s to 8 s
    pause:0.25@5  pause:250ms@5  sub-second spans
    burst:20000@15               20,000 rows written on the primary at 15 s (20k works too)
    kill-replica@40              the replica's server SIGKILLed at 40 s, restarted at once
    kill-replica@40..44          ... and kept down until 44 s
    pause:3@5#1                  on replica1 (default: replica0)
    link:delay=40ms@5..20        the replica's link (offload link) delayed 40 ms each way
    link:delay=40ms,jitter=5ms,rate=1mbit@5..20   toxics joined with commas
    cut@10..15                   the link cut (connections reset, refused) from 10 s to 15 s

    pause:3@5+burst:20k@15+kill-replica@30

``@AT`` defaults to 0.  Or a TOML file (``--scenario FILE.toml``) with phases;
a phase without ``at`` starts when the previous one ends::

    name = "pause, then a burst"
    duration = 40          # optional: the default --duration
    write_rate = 20        # optional: the default --write-rate
    replica_workers = 4    # optional: the servers' knobs for the run (put back afterwards):
    semi_sync = true       #   parallel appliers, semi-sync, binlog group commit delay
    group_commit_delay = "2ms"  # (--replica-workers, --semi-sync, --group-commit-delay win)

    [[phase]]
    kind = "steady"        # a spacer: 5 s of baseline
    for = 5
    [[phase]]
    kind = "pause"
    seconds = 3            # 5 s .. 8 s
    [[phase]]
    spec = "burst:20000@15"

Parsing is pure: nothing here touches a server.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from offload.errors import ConfigError

__all__ = [
    "Injection",
    "Kind",
    "Scenario",
    "ScenarioError",
    "format_seconds",
    "link_toxics",
    "load_scenario",
    "parse_rows",
    "parse_scenario",
    "parse_seconds",
]

#: seconds of baseline after the last injection when no --duration is given
TAIL = 10.0
#: the shortest default duration
MIN_DEFAULT_DURATION = 20.0
#: MASTER_DELAY / SOURCE_DELAY limit (replication.MAX_DELAY)
_MAX_DELAY = 2**31 - 1
_HELP = (
    "write steps like steady, delay:2, pause:3@5, burst:20000@15, kill-replica@40, "
    "link:delay=40ms@5..20, cut@10..15, joined with + (see docs/experiments.md)"
)


class ScenarioError(ConfigError):
    """A scenario spec or file that cannot be understood (exit status 2)."""

    def __init__(self, message: str, *, hint: str | None = _HELP) -> None:
        super().__init__(message, hint=hint)


class Kind(StrEnum):
    """What an injection does to replication."""

    PAUSE = "pause"  # stop the SQL (applier) thread for a span
    DELAY = "delay"  # MASTER_DELAY / SOURCE_DELAY
    BURST = "burst"  # a write burst on the primary
    KILL = "kill-replica"  # SIGKILL the replica's server, then restart it
    LINK = "link"  # toxics on the replica's shaped link (offload link)
    CUT = "cut"  # the replica's link cut: connections reset, new ones refused


def format_seconds(value: float) -> str:
    """``3`` for 3.0, ``0.25`` for 0.25: the shortest text that parses back."""
    return f"{value:g}" if value == round(value, 6) else repr(value)


@dataclass(frozen=True, slots=True)
class Injection:
    """One thing done to replication at ``at`` seconds after the start."""

    kind: Kind
    at: float = 0.0
    #: pause: how long the applier stays stopped; delay: the delay itself
    seconds: float = 0.0
    #: burst: rows written
    rows: int = 0
    #: delay / kill: when it is lifted (None: delay to the end; kill: restart at once)
    until: float | None = None
    #: which replica (index into slave_connection); a burst hits the primary
    replica: int = 0
    #: link: its toxics as written, canonical (``delay=40ms,rate=1mbit``)
    link: str = ""

    @property
    def end(self) -> float | None:
        """When the injection is lifted; None for a delay that lasts to the end."""
        if self.kind is Kind.PAUSE:
            return self.at + self.seconds
        if self.kind is Kind.KILL:
            return self.until if self.until is not None else self.at
        if self.kind in (Kind.DELAY, Kind.LINK, Kind.CUT):
            return self.until
        return self.at

    @property
    def spec(self) -> str:
        """The canonical spec string of this step."""
        at = f"@{format_seconds(self.at)}" if self.at or self.until is not None else ""
        until = f"..{format_seconds(self.until)}" if self.until is not None else ""
        on = f"#{self.replica}" if self.replica else ""
        if self.kind is Kind.BURST:
            return f"burst:{self.rows}{at}"
        if self.kind is Kind.KILL:
            return f"kill-replica{at}{until}{on}"
        if self.kind is Kind.CUT:
            return f"cut{at}{until}{on}"
        if self.kind is Kind.LINK:
            return f"link:{self.link}{at}{until}{on}"
        return f"{self.kind.value}:{format_seconds(self.seconds)}{at}{until}{on}"

    def overlaps(self, other: Injection, horizon: float) -> bool:
        """Whether two injections on the same replica are active at the same time."""
        if self.kind is Kind.BURST or other.kind is Kind.BURST:
            return False
        if self.replica != other.replica:
            return False
        mine_end, theirs_end = self.end or horizon, other.end or horizon
        mine_end = max(mine_end, self.at + 1e-9)  # a kill with an instant restart still counts
        theirs_end = max(theirs_end, other.at + 1e-9)
        return self.at < theirs_end and other.at < mine_end


@dataclass(frozen=True, slots=True)
class Scenario:
    """Injections on a timeline, and (from a file) default duration and write rate."""

    injections: tuple[Injection, ...] = ()
    name: str = ""
    duration: float | None = None
    write_rate: float | None = None
    #: the servers' knobs for the run (None: as the testbed has them)
    replica_workers: int | None = None
    semi_sync: bool | None = None
    group_commit_delay: float | None = None

    @property
    def spec(self) -> str:
        """The canonical spec string (``steady`` when nothing is injected)."""
        return "+".join(i.spec for i in self.injections) or "steady"

    @property
    def last_event(self) -> float:
        """The latest moment anything is injected or lifted."""
        moments = [0.0]
        for injection in self.injections:
            moments.append(injection.at)
            if injection.end is not None:
                moments.append(injection.end)
        return max(moments)

    def default_duration(self) -> float:
        """The scenario's own duration, else the last event plus a tail of baseline."""
        if self.duration is not None:
            return self.duration
        return max(MIN_DEFAULT_DURATION, math.ceil(self.last_event + TAIL))

    def replicas_needed(self) -> int:
        """How many replicas the scenario addresses (at least 1)."""
        return 1 + max((i.replica for i in self.injections if i.kind is not Kind.BURST), default=0)

    def check(self, duration: float, replicas: int | None = None) -> None:
        """Raise ScenarioError unless the scenario fits in ``duration`` seconds."""
        if not duration > 0 or not math.isfinite(duration):
            raise ScenarioError(
                f"the duration must be a positive number of seconds, not {duration!r}", hint=None
            )
        for injection in self.injections:
            end = injection.end if injection.end is not None else injection.at
            if end > duration or injection.at >= duration:
                raise ScenarioError(
                    f"{injection.spec} does not fit in {format_seconds(duration)} s",
                    hint=f"use --duration {math.ceil(end + TAIL)} or move the step earlier",
                )
        if replicas is not None and self.replicas_needed() > replicas:
            raise ScenarioError(
                f"the scenario addresses replica{self.replicas_needed() - 1}, but there "
                f"{'is' if replicas == 1 else 'are'} only {replicas}",
                hint="use --replicas with an own testbed, or a testbed with more replicas",
            )


# --- the spec language ------------------------------------------------------

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_STEP = re.compile(
    rf"""^(?P<kind>[a-z-]+)
        (?::(?P<arg>{_NUMBER}[a-zA-Z]*|[a-z]+=[^@\#+]+))?
        (?:@(?P<at>{_NUMBER}(?:ms|s)?)(?:\.\.(?P<until>{_NUMBER}(?:ms|s)?))?)?
        (?:\#(?P<replica>\d+))?$""",
    re.VERBOSE,
)
_KIND_WORDS = {
    "steady": None,
    "delay": Kind.DELAY,
    "pause": Kind.PAUSE,
    "burst": Kind.BURST,
    "kill-replica": Kind.KILL,
    "kill": Kind.KILL,
    "link": Kind.LINK,
    "cut": Kind.CUT,
}
#: the toxics a scenario may set on a link
_LINK_TOXICS = ("delay", "jitter", "rate")


def link_toxics(text: str) -> dict[str, float]:
    """``delay=40ms,rate=1mbit`` → the link's toxics (seconds, bytes per second)."""
    from offload.link.toxics import parse_duration, parse_rate  # noqa: PLC0415

    toxics: dict[str, float] = {}
    for part in text.split(","):
        name, equals, value = part.strip().partition("=")
        if not equals or name not in _LINK_TOXICS or name in toxics:
            raise ScenarioError(
                f"cannot read the link toxic {part.strip()!r}",
                hint="write link:delay=40ms, link:jitter=5ms, link:rate=1mbit, "
                "joined with commas (each at most once)",
            )
        option = f"link {name}"
        toxics[name] = (
            parse_rate(value, option=option)
            if name == "rate"
            else parse_duration(value, option=option)
        )
    return toxics


def parse_seconds(text: str, what: str = "a time") -> float:
    """``3``, ``0.5``, ``2s``, ``250ms`` → seconds (finite, >= 0)."""
    raw = text.strip()
    match = re.fullmatch(rf"({_NUMBER})(ms|s)?", raw)
    if match is None:
        raise ScenarioError(f"{what} must be seconds like 3, 0.5, 2s or 250ms, not {raw!r}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def parse_rows(text: str) -> int:
    """``20000``, ``20k``, ``1.5k``, ``1M`` → a whole number of rows (>= 1)."""
    raw = text.strip()
    match = re.fullmatch(rf"({_NUMBER})([kKmM]?)", raw)
    if match is None:
        raise ScenarioError(f"burst rows must be a count like 20000, 20k or 1M, not {raw!r}")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    rows = float(match.group(1)) * scale
    if rows != int(rows) or rows < 1:
        raise ScenarioError(f"burst rows must be a whole number >= 1, not {raw!r}")
    return int(rows)


def _step(text: str) -> Injection | None:
    raw = text.strip()
    match = _STEP.match(raw)
    if match is None or match.group("kind") not in _KIND_WORDS:
        raise ScenarioError(f"cannot read the scenario step {raw!r}")
    kind, arg = _KIND_WORDS[match.group("kind")], match.group("arg")
    at = parse_seconds(match.group("at"), f"the start of {raw!r}") if match.group("at") else 0.0
    until = (
        parse_seconds(match.group("until"), f"the end of {raw!r}") if match.group("until") else None
    )
    replica = int(match.group("replica") or 0)
    if kind is None:
        if arg or match.group("at") or match.group("replica"):
            raise ScenarioError(f"steady takes no arguments, got {raw!r}")
        return None
    return _build(
        kind,
        raw,
        arg=arg,
        at=at,
        until=until,
        replica=replica,
        replica_given=match.group("replica") is not None,
    )


def _build(
    kind: Kind,
    raw: str,
    *,
    arg: str | None,
    at: float,
    until: float | None,
    replica: int,
    replica_given: bool,
) -> Injection:
    if until is not None and kind not in (Kind.DELAY, Kind.KILL, Kind.LINK, Kind.CUT):
        raise ScenarioError(
            f"{raw!r}: only delay, kill-replica, link and cut take @AT..UNTIL "
            "(a pause's span is its argument)"
        )
    if until is not None and until <= at:
        raise ScenarioError(
            f"{raw!r}: the end ({format_seconds(until)} s) must come after "
            f"the start ({format_seconds(at)} s)"
        )
    if kind is Kind.BURST:
        if replica_given:
            raise ScenarioError(f"{raw!r}: a burst is written on the primary, not a replica")
        if arg is None:
            raise ScenarioError(f"{raw!r}: a burst needs its rows, e.g. burst:20000@15")
        return Injection(kind, at=at, rows=parse_rows(arg))
    if kind is Kind.CUT:
        if arg is not None or until is None:
            raise ScenarioError(f"{raw!r}: a cut takes its span only, e.g. cut@10..15")
        return Injection(kind, at=at, until=until, replica=replica)
    if kind is Kind.LINK:
        if arg is None or "=" not in arg:
            raise ScenarioError(f"{raw!r}: a link step names its toxics, e.g. link:delay=40ms@5")
        link_toxics(arg)  # refused here, not when the experiment reaches it
        canonical = ",".join(part.strip() for part in arg.split(","))
        return Injection(kind, at=at, until=until, replica=replica, link=canonical)
    if kind is Kind.KILL:
        if arg is not None:
            raise ScenarioError(
                f"{raw!r}: kill-replica takes no argument; keep it down "
                "with @AT..UNTIL, e.g. kill-replica@40..44"
            )
        return Injection(kind, at=at, until=until, replica=replica)
    if arg is None:
        raise ScenarioError(f"{raw!r}: {kind.value} needs its seconds, e.g. {kind.value}:2")
    seconds = parse_seconds(arg, f"the seconds of {raw!r}")
    if kind is Kind.PAUSE and seconds <= 0:
        raise ScenarioError(f"{raw!r}: a pause must last more than 0 s")
    if kind is Kind.DELAY and (seconds != int(seconds) or not 1 <= seconds <= _MAX_DELAY):
        raise ScenarioError(
            f"{raw!r}: MASTER_DELAY / SOURCE_DELAY takes whole seconds >= 1",
            hint="for a sub-second lag use pause:S (the SQL thread stopped for S seconds)",
        )
    return Injection(kind, at=at, seconds=seconds, until=until, replica=replica)


def _checked(
    injections: Sequence[Injection],
    name: str = "",
    duration: float | None = None,
    write_rate: float | None = None,
) -> Scenario:
    ordered = tuple(sorted(injections, key=lambda i: (i.at, i.replica, i.kind.value)))
    horizon = max([i.end or i.at for i in ordered] + [0.0]) + 1e6
    for index, first in enumerate(ordered):
        for second in ordered[index + 1 :]:
            if first.overlaps(second, horizon):
                raise ScenarioError(
                    f"{first.spec} and {second.spec} act on replica{first.replica} at the "
                    "same time",
                    hint="give each one its own time span",
                )
    return Scenario(ordered, name=name, duration=duration, write_rate=write_rate)


def parse_scenario(spec: str) -> Scenario:
    """A spec string (steps joined with ``+``) → a Scenario."""
    text = spec.strip()
    if not text:
        raise ScenarioError("the scenario is empty")
    steps = [_step(part) for part in text.split("+")]
    return _checked([s for s in steps if s is not None])


# --- scenario files -----------------------------------------------------------

_PHASE_KEYS = frozenset({"kind", "spec", "at", "seconds", "rows", "for", "until", "replica"})
_FILE_KEYS = frozenset(
    {
        "name",
        "duration",
        "write_rate",
        "phase",
        "description",
        "replica_workers",
        "semi_sync",
        "group_commit_delay",
    }
)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ScenarioError(f"{what} must be a number of seconds, not {value!r}")
    seconds = parse_seconds(str(value), what) if isinstance(value, str) else float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ScenarioError(f"{what} must be a finite number >= 0, not {value!r}")
    return seconds


def _phase(table: Mapping[str, Any], index: int, start: float) -> tuple[Injection | None, float]:
    """One [[phase]] → its injection (None for steady) and when the next phase may start."""
    where = f"phase {index + 1}"
    unknown = sorted(set(table) - _PHASE_KEYS)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key {unknown[0]!r}",
            hint=f"known keys: {', '.join(sorted(_PHASE_KEYS))}",
        )
    if "spec" in table:
        if set(table) - {"spec"}:
            raise ScenarioError(
                f"{where}: give either spec or kind/at/... keys, not both", hint=None
            )
        scenario = parse_scenario(str(table["spec"]))
        if len(scenario.injections) > 1:
            raise ScenarioError(f"{where}: one step per phase", hint=None)
        injection = scenario.injections[0] if scenario.injections else None
        return injection, (injection.end or injection.at) if injection else start
    kind_word = str(table.get("kind", ""))
    if kind_word not in _KIND_WORDS:
        raise ScenarioError(
            f"{where}: kind must be one of steady, delay, pause, burst, "
            f"kill-replica, link, cut; got {kind_word!r}",
            hint=None,
        )
    at = _number(table["at"], f"{where}: at") if "at" in table else start
    span = _number(table["for"], f"{where}: for") if "for" in table else None
    until = _number(table["until"], f"{where}: until") if "until" in table else None
    if span is not None and until is not None:
        raise ScenarioError(f"{where}: give for or until, not both", hint=None)
    if span is not None:
        until = at + span
    kind = _KIND_WORDS[kind_word]
    if kind is None:
        if until is None:
            raise ScenarioError(f"{where}: a steady phase needs for = SECONDS", hint=None)
        return None, until
    arg: str | None = None
    if "seconds" in table:
        arg = format_seconds(_number(table["seconds"], f"{where}: seconds"))
    elif "rows" in table:
        rows = table["rows"]
        if isinstance(rows, bool) or not isinstance(rows, int | str):
            raise ScenarioError(f"{where}: rows must be a whole number, not {rows!r}")
        arg = str(rows)
    replica = table.get("replica", 0)
    if isinstance(replica, bool) or not isinstance(replica, int) or replica < 0:
        raise ScenarioError(f"{where}: replica must be an index >= 0, not {replica!r}")
    if kind is Kind.PAUSE and until is not None and arg is None:
        arg, until = format_seconds(until - at), None  # pause for = N is pause seconds = N
    injection = _build(
        kind,
        f"{where} ({kind.value})",
        arg=arg,
        at=at,
        until=until,
        replica=replica,
        replica_given="replica" in table,
    )
    return injection, injection.end if injection.end is not None else at


def scenario_from_mapping(data: Mapping[str, Any], *, source: str = "the scenario") -> Scenario:
    """A Scenario from a parsed TOML document."""
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ScenarioError(
            f"{source}: unknown key {unknown[0]!r}",
            hint=f"known keys: {', '.join(sorted(_FILE_KEYS))}",
        )
    phases = data.get("phase", [])
    if not isinstance(phases, list) or not all(isinstance(p, dict) for p in phases):
        raise ScenarioError(f"{source}: phases are [[phase]] tables", hint=None)
    injections: list[Injection] = []
    start = 0.0
    for index, table in enumerate(phases):
        injection, start = _phase(table, index, start)
        if injection is not None:
            injections.append(injection)
    duration = _number(data["duration"], f"{source}: duration") if "duration" in data else None
    rate = data.get("write_rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0
    ):
        raise ScenarioError(f"{source}: write_rate must be a number >= 0, not {rate!r}", hint=None)
    scenario = _checked(
        injections,
        name=str(data.get("name", "")),
        duration=duration,
        write_rate=float(rate) if rate is not None else None,
    )
    if duration is not None:
        scenario.check(duration)
    return replace(scenario, **_file_knobs(data, source))


def _file_knobs(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """replica_workers, semi_sync, group_commit_delay of a scenario file (checked)."""
    knobs: dict[str, Any] = {}
    workers = data.get("replica_workers")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ScenarioError(
                f"{source}: replica_workers must be a whole number >= 1, not {workers!r}",
                hint=None,
            )
        knobs["replica_workers"] = workers
    semi = data.get("semi_sync")
    if semi is not None:
        if not isinstance(semi, bool):
            raise ScenarioError(f"{source}: semi_sync is true or false, not {semi!r}", hint=None)
        knobs["semi_sync"] = semi
    if "group_commit_delay" in data:
        knobs["group_commit_delay"] = _number(
            data["group_commit_delay"], f"{source}: group_commit_delay"
        )
    return knobs


def load_scenario(spec_or_path: str) -> Scenario:
    """``--scenario``'s value: a ``.toml`` file (or any existing file), else a spec string."""
    path = Path(spec_or_path)
    if spec_or_path.endswith(".toml") or (path.suffix and path.is_file()):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ScenarioError(f"scenario file {path} does not exist", hint=None) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"cannot read scenario file {path}: {exc}", hint=None) from None
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{path} is not TOML ({exc})", hint=None) from None
        scenario = scenario_from_mapping(data, source=str(path))
        return scenario if scenario.name else replace(scenario, name=path.stem)
    return parse_scenario(spec_or_path)
