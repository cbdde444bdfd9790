"""Hand-off from host threads to the engine thread.

All device state changes happen on the thread that runs the vCPU.  Other host
threads (terminal input, the hypervisor's timer thread) post a callable here;
`post()` then calls the engine's `wake` hook so a vCPU blocked in KVM_RUN or
HLT comes back promptly and runs `drain()`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable


class HostEvents:
    def __init__(self) -> None:
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._lock = threading.Lock()
        self.wake: Callable[[], None] | None = None

    def post(self, action: Callable[[], None]) -> None:
        with self._lock:
            self._queue.append(action)
        wake = self.wake
        if wake is not None:
            wake()

    def pending(self) -> bool:
        return bool(self._queue)

    def drain(self) -> int:
        ran = 0
        while True:
            with self._lock:
                if not self._queue:
                    return ran
                action = self._queue.popleft()
            action()
            ran += 1
