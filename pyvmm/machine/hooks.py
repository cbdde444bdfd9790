"""Instrumentation hooks: user callbacks on code, blocks, memory, ports, MMIO,
interrupts and VM exits (the API in the style of Unicorn's `hook_add`).

One `HookSet` per VM holds every installed hook.  Engines and buses look at
it only where a kind has at least one hook, so a VM without hooks runs its
ordinary fast paths (docs/HOOKS.md states what each engine can serve).

Ranges are inclusive, as in Unicorn: `begin <= address <= end`.  Code and
memory hooks take guest *linear* addresses (what the instruction used, after
segmentation, before paging); MMIO hooks take guest-physical addresses; port
hooks take port numbers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

ADDRESS_MAX = (1 << 64) - 1


class HookKind(enum.Enum):
    CODE = "code"  # callback(vm, address, size) before each instruction in range
    BLOCK = "block"  # callback(vm, address, size) at each basic block's start
    MEM_READ = "mem_read"  # callback(vm, address, size, value) after a data read
    MEM_WRITE = "mem_write"  # callback(vm, address, size, value) -> False vetoes it
    PORT = "port"  # callback(vm, port, size, value, is_write)
    MMIO = "mmio"  # callback(vm, address, size, value, is_write)
    INTERRUPT = "interrupt"  # callback(vm, vector, error_code) before delivery
    EXIT = "exit"  # callback(vm, reason) for each KVM exit


@dataclass(frozen=True)
class Hook:
    handle: int
    kind: HookKind
    callback: Callable[..., object]
    begin: int
    end: int

    def covers(self, address: int, size: int = 1) -> bool:
        return address <= self.end and address + size - 1 >= self.begin


class HookSet:
    """The hooks installed on one VM, by kind.

    `listeners` are told (with no arguments) whenever the set changes, so an
    engine can switch between its plain and instrumented paths.  `target` is
    the first argument every callback receives (the VirtualMachine).
    """

    def __init__(self, target: object = None) -> None:
        self.target = target
        self.by_kind: dict[HookKind, list[Hook]] = {kind: [] for kind in HookKind}
        self._handles: dict[int, Hook] = {}
        self._next = 1
        self.listeners: list[Callable[[], None]] = []

    # -- installing --------------------------------------------------------
    def add(self, kind: HookKind, callback: Callable[..., object], begin: int = 0,
            end: int = ADDRESS_MAX) -> int:
        if not callable(callback):
            raise TypeError(f"hook callback must be callable, not {type(callback).__name__}")
        if begin < 0 or end < begin:
            raise ValueError(f"hook range {begin:#x}..{end:#x} is empty or negative")
        hook = Hook(self._next, kind, callback, begin, end)
        self._next += 1
        self._handles[hook.handle] = hook
        self.by_kind[kind].append(hook)
        self._changed()
        return hook.handle

    def add_ports(self, callback: Callable[..., object], ports: Iterable[int]) -> list[int]:
        """One PORT hook per contiguous run of `ports` (a range, a list, a set)."""
        handles = []
        run: list[int] = []
        for port in sorted(set(ports)):
            if not 0 <= port <= 0xFFFF:
                raise ValueError(f"port {port:#x} is outside 0..0xffff")
            if run and port != run[-1] + 1:
                handles.append(self.add(HookKind.PORT, callback, run[0], run[-1]))
                run = []
            run.append(port)
        if run:
            handles.append(self.add(HookKind.PORT, callback, run[0], run[-1]))
        return handles

    def remove(self, handle: int) -> None:
        hook = self._handles.pop(handle, None)
        if hook is None:
            raise KeyError(f"no hook with handle {handle}")
        self.by_kind[hook.kind].remove(hook)
        self._changed()

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()

    def active(self, kind: HookKind) -> bool:
        return bool(self.by_kind[kind])

    def kinds(self) -> set[HookKind]:
        return {kind for kind, hooks in self.by_kind.items() if hooks}

    def covers_page(self, kinds: tuple[HookKind, ...], page: int) -> bool:
        """Whether any hook of `kinds` covers some byte of the 4 KiB page `page`."""
        first, last = page << 12, (page << 12) | 0xFFF
        return any(h.begin <= last and h.end >= first
                   for kind in kinds for h in self.by_kind[kind])

    # -- firing --------------------------------------------------------------
    def code(self, address: int, size: int) -> None:
        for hook in self.by_kind[HookKind.CODE]:
            if hook.begin <= address <= hook.end:
                hook.callback(self.target, address, size)

    def block(self, address: int, size: int) -> None:
        for hook in self.by_kind[HookKind.BLOCK]:
            if hook.begin <= address <= hook.end:
                hook.callback(self.target, address, size)

    def mem_read(self, address: int, size: int, value: int) -> None:
        for hook in self.by_kind[HookKind.MEM_READ]:
            if hook.covers(address, size):
                hook.callback(self.target, address, size, value)

    def mem_write(self, address: int, size: int, value: int) -> bool:
        """False when a callback vetoed the write (returned False)."""
        allowed = True
        for hook in self.by_kind[HookKind.MEM_WRITE]:
            if hook.covers(address, size) and hook.callback(self.target, address, size,
                                                            value) is False:
                allowed = False
        return allowed

    def access(self, kind: HookKind, address: int, size: int, value: int,
               is_write: bool) -> None:
        """A port or MMIO access (value read or written)."""
        for hook in self.by_kind[kind]:
            if hook.covers(address, size):
                hook.callback(self.target, address, size, value, is_write)

    def interrupt(self, vector: int, error_code: int | None) -> None:
        for hook in self.by_kind[HookKind.INTERRUPT]:
            hook.callback(self.target, vector, error_code)

    def exit(self, reason: str) -> None:
        for hook in self.by_kind[HookKind.EXIT]:
            hook.callback(self.target, reason)
