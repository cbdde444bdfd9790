"""Record and replay: every input from outside the VM, with the guest instruction count.

An emulating engine is deterministic in guest instructions: its clock counts
instructions (ClockSource.MANUAL), so the same inputs at the same counts give
the same run, byte for byte.  What comes from outside is:

- ``serial``: bytes typed for COM1 (host terminal input);
- ``clock``: guest time jumping to host time while the guest sleeps in HLT and
  something wakes it early (idle pacing; otherwise HLT skips to the next
  timer, which is deterministic);
- the RTC's wall-clock time at the start, in the header.

The file is JSON lines: one header object, then one object per input
``{"n": <instructions since the start>, "t": <guest ns>, "kind": ..., "data":
<hex>, "rip": ...}``
and, when the run ends, ``{"end": <instructions>, "stop": <StopKind name>}``.
Each line is flushed as it is written, so a recording survives a crash of
the host process up to its last input.  `t` is the guest time at which the
input was applied: a guest asleep in HLT has the same instruction count for
a while, and its timers fire in between, so the count alone does not place
an input.  `rip` is where the guest was when the input arrived; a replay
that finds the guest elsewhere has diverged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pyvmm.errors import PyvmmError
from pyvmm.files import read_user_file

FORMAT = "pyvmm-input-log"
VERSION = 1
MAX_LOG_BYTES = 256 << 20

# The input kinds: the name in the file -> what its "data" holds.
INPUT_KINDS = {
    "serial": "bytes for COM1's receiver",
    "clock": "none: the halted guest's clock jumped to `t`",
}


class ReplayError(PyvmmError):
    """A record file that cannot be replayed (missing, truncated, corrupt)."""


@dataclass(frozen=True)
class InputEvent:
    count: int  # guest instructions since the recording started
    time_ns: int  # the guest clock when it was applied
    kind: str
    data: bytes
    rip: int


class InputRecorder:
    """Writes the input log of a run as it happens."""

    def __init__(self, path: Path, engine: str, wall_time_ns: int) -> None:
        try:
            self._file: TextIO | None = open(path, "w", encoding="ascii")  # noqa: SIM115
        except OSError as error:
            raise ReplayError(f"{path}: cannot write the record file: {error.strerror}") \
                from None
        self.path = path
        self.events = 0
        self._write({"format": FORMAT, "version": VERSION, "engine": engine,
                     "wall_time_ns": wall_time_ns})

    def _write(self, obj: dict) -> None:
        assert self._file is not None
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._file.flush()

    def record(self, count: int, time_ns: int, kind: str, data: bytes, rip: int) -> None:
        self.events += 1
        self._write({"n": count, "t": time_ns, "kind": kind, "data": data.hex(), "rip": rip})

    def finish(self, count: int, stop: str) -> None:
        if self._file is not None:
            self._write({"end": count, "stop": stop})
            self._file.close()
            self._file = None


class InputLog:
    """A record file read back: its header, its inputs in order, how it ended."""

    def __init__(self, path: Path) -> None:
        text = read_user_file(path, MAX_LOG_BYTES, ReplayError, "record file")
        lines = text.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if not lines:
            raise ReplayError(f"{path}: empty, not a pyvmm record file")
        header = self._parse(path, 1, lines[0])
        if header.get("format") != FORMAT:
            raise ReplayError(f"{path}: not a pyvmm record file (no {FORMAT!r} header)")
        if header.get("version") != VERSION:
            raise ReplayError(f"{path}: record format version {header.get('version')!r}; "
                              f"this pyvmm reads version {VERSION}")
        self.path = path
        self.engine = str(header.get("engine", "?"))
        self.wall_time_ns = self._int(path, 1, header, "wall_time_ns")
        self.events: list[InputEvent] = []
        self.end_count: int | None = None
        self.end_stop: str | None = None
        last = 0
        for number, raw in enumerate(lines[1:], start=2):
            if self.end_count is not None:
                raise ReplayError(f"{path}: line {number}: input after the end of the run")
            obj = self._parse(path, number, raw)
            if "end" in obj:
                self.end_count = self._int(path, number, obj, "end")
                self.end_stop = str(obj.get("stop", "?"))
                continue
            count = self._int(path, number, obj, "n")
            kind = obj.get("kind")
            if kind not in INPUT_KINDS:
                raise ReplayError(f"{path}: line {number}: unknown input kind {kind!r}")
            if count < last:
                raise ReplayError(f"{path}: line {number}: instruction count {count} goes "
                                  f"back (the previous input was at {last})")
            try:
                data = bytes.fromhex(str(obj.get("data", "")))
            except ValueError:
                raise ReplayError(f"{path}: line {number}: data is not hex") from None
            self.events.append(InputEvent(count, self._int(path, number, obj, "t"), kind, data,
                                          self._int(path, number, obj, "rip")))
            last = count

    @staticmethod
    def _parse(path: Path, number: int, raw: bytes) -> dict:
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ReplayError(f"{path}: line {number} is not JSON (a truncated or corrupt "
                              "record file)") from None
        if not isinstance(obj, dict):
            raise ReplayError(f"{path}: line {number} is not a JSON object")
        return obj

    @staticmethod
    def _int(path: Path, number: int, obj: dict, key: str) -> int:
        value = obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ReplayError(f"{path}: line {number}: {key!r} must be a non-negative "
                              f"integer, not {value!r}")
        return value


class InputReplayer:
    """Hands a log's inputs back in order, at their instruction counts."""

    def __init__(self, log: InputLog) -> None:
        self.log = log
        self._next = 0
        self.live_inputs_ignored = 0

    def peek(self) -> InputEvent | None:
        events = self.log.events
        return events[self._next] if self._next < len(events) else None

    def pop(self) -> InputEvent:
        event = self.log.events[self._next]
        self._next += 1
        return event

    @property
    def remaining(self) -> int:
        return len(self.log.events) - self._next
