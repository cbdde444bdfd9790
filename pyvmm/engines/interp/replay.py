"""The emulating engines' side of record/replay (the log is pyvmm/machine/replay.py).

Recording: every guest input the board's event queue applies is logged with
the instruction count at which it was applied, and so is each jump of the
guest clock to host time while the guest sleeps in HLT.

Replaying: live inputs are dropped (and counted); the run loop ends its
batches exactly at the recorded counts (the JIT runs a block only when it
fits in the budget, so the count is exact under both engines) and applies
each input there, in the recorded order.  A halted guest whose next input is
due now gets it now; otherwise HLT skips to the next timer without pacing,
so a replay runs as fast as the host allows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvmm.machine.replay import InputRecorder, InputReplayer
from pyvmm.machine.stop import StopKind, StopReason

if TYPE_CHECKING:
    from pyvmm.engines.interp.engine import InterpreterEngine

CLOCK = "clock"
# Stops that come from the host, not the guest: a replay ends there on its own.
HOST_STOPS = frozenset({StopKind.USER_QUIT, StopKind.TIMEOUT, StopKind.PAUSED,
                        StopKind.OUTPUT_CLOSED, StopKind.OUTPUT_LIMIT})


class InputLogDriver:
    """Records to `recorder` or replays from `replayer` (exactly one)."""

    def __init__(self, engine: InterpreterEngine, recorder: InputRecorder | None = None,
                 replayer: InputReplayer | None = None) -> None:
        assert (recorder is None) != (replayer is None)
        self.engine = engine
        self.recorder = recorder
        self.replayer = replayer
        self.base = engine.instructions
        events = engine.board.events
        events.on_input = self._recorded if recorder is not None else self._live_ignored

    @property
    def replaying(self) -> bool:
        return self.replayer is not None

    def count(self) -> int:
        return self.engine.instructions - self.base

    def detach(self) -> None:
        self.engine.board.events.on_input = None

    # -- recording --------------------------------------------------------------
    def _recorded(self, kind: str, data: bytes) -> bool:
        assert self.recorder is not None
        self.recorder.record(self.count(), self.engine.board.clock.now_ns(), kind, data,
                             self.engine.cpu.rip)
        return True

    def clock_jumped(self, now_ns: int) -> None:
        """The halted guest's clock moved to host time (idle pacing, woken early)."""
        if self.recorder is not None:
            self.recorder.record(self.count(), now_ns, CLOCK, b"", self.engine.cpu.rip)

    # -- replaying --------------------------------------------------------------
    def _live_ignored(self, kind: str, data: bytes) -> bool:
        assert self.replayer is not None
        self.replayer.live_inputs_ignored += 1
        self.engine.board.stats.count("replay", f"live {kind} input ignored")
        return False

    def _next_count(self) -> int | None:
        """Where the next batch must end: the next input, else the recording's end."""
        assert self.replayer is not None
        event = self.replayer.peek()
        return event.count if event is not None else self.replayer.log.end_count

    def limit(self, budget: int) -> int:
        """The batch budget, cut so the batch ends at the next input's count."""
        target = None if self.replayer is None else self._next_count()
        if target is None:
            return budget
        return max(1, min(budget, target - self.count()))

    def apply_due(self) -> StopReason | None:
        """Apply every input due at the current count; a stop if the guest diverged."""
        replayer = self.replayer
        if replayer is None:
            return None
        now = self.count()
        while (event := replayer.peek()) is not None and event.count <= now:
            if event.count < now:
                return self._diverged(f"the input at instruction {event.count} was passed "
                                      f"(the guest is at {now})")
            rip = self.engine.cpu.rip
            if event.rip != rip:
                return self._diverged(f"at instruction {now} the recording has rip "
                                      f"{event.rip:#x}, the guest is at {rip:#x}")
            replayer.pop()
            board = self.engine.board
            # A sleeping guest's timers up to `t` fire first, as they did when recorded.
            board.clock.advance_to(event.time_ns)
            board.clock.run_due()
            if event.kind != CLOCK:
                board.events.apply_input(event.kind, event.data)
            board.stats.count("replay", f"{event.kind} inputs replayed")
        log = replayer.log
        if event is None and log.end_count is not None and now >= log.end_count \
                and self.engine.board.stop_request is None:  # a guest stop comes first
            return self._at_end(now)
        return None

    def _at_end(self, now: int) -> StopReason:
        """All inputs replayed and the recording's last instruction reached."""
        assert self.replayer is not None
        log = self.replayer.log
        kind = StopKind.__members__.get(log.end_stop or "")
        if kind in HOST_STOPS:
            return StopReason(kind, f"the recording {log.path} ended here, after {now} "
                                    "instructions")
        return self._diverged(f"the recorded run stopped at instruction {log.end_count} "
                              f"({log.end_stop}); the guest ran on")

    def halted(self) -> StopReason | None | bool:
        """HLT with IF=1 under replay: a stop, None (handled), or False (no input left:
        wait as a live run would)."""
        replayer = self.replayer
        assert replayer is not None
        event = replayer.peek()
        if event is None:
            end = replayer.log.end_count
            if end is not None and self.count() >= end:
                return self._at_end(self.count())
            return False
        if event.count == self.count():
            return self.apply_due()
        clock = self.engine.board.clock
        deadline = clock.next_deadline()
        if deadline is None:
            return self._diverged(f"the guest sleeps at instruction {self.count()} with no "
                                  f"timer armed, but the next input is at {event.count}")
        clock.advance_to(deadline)
        clock.run_due()
        return None

    def _diverged(self, why: str) -> StopReason:
        assert self.replayer is not None
        return StopReason(StopKind.REPLAY_DIVERGED, f"{self.replayer.log.path}: {why}")
