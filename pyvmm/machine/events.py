"""Hand-off from host threads to the engine thread.

All device state changes happen on the thread that runs the vCPU.  Other host
threads (terminal input, the hypervisor's timer thread) post a callable here;
`post()` then calls the engine's `wake` hook so a vCPU blocked in KVM_RUN or
HLT comes back promptly and runs `drain()`.

Guest *inputs* (bytes typed for COM1, ...) go through `post_input` with a
kind the board registered, so that record/replay (pyvmm/machine/replay.py)
can see each one as it is applied (`on_input`) and apply recorded ones
itself (`apply_input`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

# on_input(kind, data) -> False to drop the input (a replay ignores live input).
InputObserver = Callable[[str, bytes], bool]


class HostEvents:
    def __init__(self) -> None:
        self._queue: collections.deque[tuple[Callable[[], None], tuple[str, bytes] | None]] = \
            collections.deque()
        self._lock = threading.Lock()
        self.wake: Callable[[], None] | None = None
        self._inputs: dict[str, Callable[[bytes], None]] = {}
        self.on_input: InputObserver | None = None

    def post(self, action: Callable[[], None]) -> None:
        self._post(action, None)

    def _post(self, action: Callable[[], None], tag: tuple[str, bytes] | None) -> None:
        with self._lock:
            self._queue.append((action, tag))
        wake = self.wake
        if wake is not None:
            wake()

    # -- guest inputs ---------------------------------------------------------
    def register_input(self, kind: str, apply: Callable[[bytes], None]) -> None:
        """The board's way to take one kind of guest input (on the vCPU thread)."""
        self._inputs[kind] = apply

    def post_input(self, kind: str, data: bytes) -> None:
        """Thread-safe: `data` for the input `kind`, applied at the next drain."""
        apply = self._inputs[kind]
        self._post(lambda: apply(data), (kind, data))

    def apply_input(self, kind: str, data: bytes) -> None:
        """Apply an input now (vCPU thread): what a replay does at the recorded count."""
        self._inputs[kind](data)

    def input_kinds(self) -> frozenset[str]:
        return frozenset(self._inputs)

    # -- the vCPU thread --------------------------------------------------------
    def pending(self) -> bool:
        return bool(self._queue)

    def drain(self) -> int:
        ran = 0
        while True:
            with self._lock:
                if not self._queue:
                    return ran
                action, tag = self._queue.popleft()
            if tag is not None and self.on_input is not None and not self.on_input(*tag):
                continue
            action()
            ran += 1
