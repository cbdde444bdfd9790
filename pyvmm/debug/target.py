"""A VM as a debugger sees it: stopped, with registers, memory and breakpoints.

Addresses from gdb are *linear* addresses (segment bases are not added; in
64-bit and flat 32-bit code that is the same as the pointer values gdb
shows).  They are translated through the guest's page tables when CR0.PG=1
with a walk that changes nothing (no accessed/dirty bits: the guest must not
see the debugger), then read from or written to guest-physical memory.
Device (MMIO) memory is never touched by the debugger.

Software breakpoints (Z0) are INT3 bytes written into guest memory, the way
a native debugger does it; the engine intercepts #BP (SDM Vol. 3A §6.15,
"Interrupt 3—Breakpoint Exception"), and the stub puts RIP back on the
breakpoint.  Reads through the debugger show the original bytes.  A guest's
own INT3 at an address with no breakpoint is delivered to the guest.

Hardware breakpoints (Z1) and write watchpoints (Z2) are checked after every
instruction while any is set: the engine then runs one instruction at a time
(slow, but exact, and it works for code in ROM).  A write watchpoint fires
when the watched bytes change.  Read and access watchpoints (Z3, Z4) fire on
any data access to the watched bytes that reads (Z3) or reads or writes (Z4),
reported after the instruction: under interp/jit through memory hooks
(pyvmm/machine/hooks.py) while the guest runs one instruction at a time.

Under kvm (KVM_SET_GUEST_DEBUG, engines/kvm/vcpu.py) breakpoints of both
kinds are the four debug registers' instruction breakpoints, so the guest
runs at full speed between them; more breakpoints than registers are checked
after each instruction instead.  Read and access watchpoints are refused
with the empty reply under kvm: memory hooks do not exist there, and this
host's KVM never fires a debug register's data breakpoint (measured: a DR7
read/write breakpoint on the debuggee's `counter` let it run to its exit),
because it emulates the guest's ring-0 code in software.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyvmm.cpu.state import CR0_PG, CpuState
from pyvmm.engines.interp.faults import BP, CpuFault
from pyvmm.engines.interp.mmu import PageWalker
from pyvmm.machine.memory import GuestMemory, GuestMemoryError
from pyvmm.machine.stop import StopKind, StopReason
from pyvmm.stats import Stats

INT3 = 0xCC
PAGE = 1 << 12
MAX_WATCH_LENGTH = 8
KVM_DEBUG_REGISTERS = 4  # DR0-DR3: the breakpoints kvm can watch for at full speed
RUN_SLICE = 0.25  # seconds the guest runs between looks at Ctrl-C and --timeout


class MemoryFault(Exception):
    """A debugger access to a linear address that maps to no RAM or ROM."""


class _QuietMemory:
    """Guest memory for the debugger's page walk: reads pass, writes vanish.

    PageWalker sets accessed/dirty bits on success (SDM Vol. 3A §4.8); a
    debugger looking at memory must not, so those writes are dropped here.
    """

    def __init__(self, memory: GuestMemory) -> None:
        self._memory = memory

    def read_int(self, gpa: int, size: int) -> int:
        return self._memory.read_int(gpa, size)

    def read(self, gpa: int, length: int) -> bytes:
        return self._memory.read(gpa, length)

    def write_u8(self, gpa: int, value: int) -> None:
        return None

    def __getattr__(self, name: str):  # noqa: ANN204 - anything else the walker reads
        return getattr(self._memory, name)


@dataclass
class Stop:
    """Why the guest stopped, as gdb will be told."""

    signal: int  # gdb's signal numbers (gdb/signals.def): 2 INT, 5 TRAP, 11 SEGV ...
    kind: str = ""  # "swbreak", "hwbreak", "watch", "rwatch", "awatch" or ""
    address: int | None = None  # for the watchpoints
    reason: StopReason | None = None  # the VM's own stop, when it ended


# How a VM's own end shows in gdb (gdb/signals.def numbering).
SIGINT, SIGTRAP, SIGILL, SIGKILL, SIGBUS, SIGSEGV, SIGTERM = 2, 5, 4, 9, 10, 11, 15
VM_STOP_SIGNALS = {
    StopKind.TRIPLE_FAULT: SIGSEGV,
    StopKind.UNMAPPED_ACCESS: SIGBUS,
    StopKind.INTERNAL_ERROR: SIGILL,
    StopKind.HALTED: SIGTRAP,
    StopKind.TIMEOUT: SIGTERM,
    StopKind.RESET: SIGTERM,
    StopKind.USER_QUIT: SIGKILL,
}


class DebugTarget:
    """The debugger's handle on one VM (any engine)."""

    def __init__(self, vm) -> None:  # noqa: ANN001 - pyvmm.vm.VirtualMachine
        self.vm = vm
        self.engine = vm.engine
        # interp/jit: exception intercepts and an instruction limit; kvm:
        # KVM_SET_GUEST_DEBUG (single-step, INT3 as a debug exit).
        self._kvm_style = not hasattr(self.engine, "intercept_exceptions")
        if self._kvm_style and not hasattr(self.engine, "set_guest_debug"):
            from pyvmm.errors import ConfigError

            raise ConfigError(f"--gdb: the {vm.engine_name} engine cannot be debugged")
        self.memory: GuestMemory = vm.board.memory
        self._walker = PageWalker(_QuietMemory(self.memory), Stats())  # type: ignore[arg-type]
        self.state: CpuState = self.engine.get_state()
        self._dirty = False
        self.breakpoints: dict[int, tuple[int, int]] = {}  # linear -> (physical, old byte)
        self.hw_breakpoints: set[int] = set()
        self.watchpoints: dict[int, tuple[int, bytes]] = {}  # linear -> (length, value)
        # Read (rwatch) and access (awatch) watchpoints: linear -> (length, kind, hooks).
        self.access_watchpoints: dict[int, tuple[int, str, list[int]]] = {}
        self._access_hit: tuple[str, int] | None = None
        self.ended: StopReason | None = None

    def image_is_64bit(self) -> bool:
        """Whether the VM booted an ELF64 kernel (ELF header e_ident[EI_CLASS] = 2)."""
        image = self.vm.image
        if image is None:
            return False
        try:
            data = image.read()
        except Exception:  # noqa: BLE001 - a restored VM's image may be gone
            return False
        return data[:4] == b"\x7fELF" and data[4:5] == b"\x02"

    # -- registers -----------------------------------------------------------
    def mark_dirty(self) -> None:
        """Registers in `state` were changed: the engine gets them before it runs."""
        self._dirty = True

    # -- memory ----------------------------------------------------------------
    def translate(self, linear: int) -> int:
        state = self.state
        if not state.cr0 & CR0_PG:
            return linear & 0xFFFFFFFF if not state.efer & (1 << 10) else linear
        try:
            walk = self._walker.walk(linear, 0, False, state.cr0, state.cr3, state.cr4,
                                     state.efer)
        except CpuFault:
            raise MemoryFault(f"linear address {linear:#x} is not mapped") from None
        return walk.physical(linear)

    def _chunks(self, linear: int, length: int):  # noqa: ANN202 - yields (phys, offset, n)
        done = 0
        while done < length:
            address = linear + done
            n = min(length - done, PAGE - (address & (PAGE - 1)))
            yield self.translate(address), done, n
            done += n

    def read_physical(self, physical: int, length: int) -> bytes:
        try:
            return bytes(self.memory.read(physical, length))
        except GuestMemoryError:
            raise MemoryFault(f"physical address {physical:#x} is not RAM or ROM") from None

    def read_memory(self, linear: int, length: int) -> bytes:
        out = bytearray(length)
        for physical, offset, n in self._chunks(linear, length):
            out[offset:offset + n] = self.read_physical(physical, n)
        for address, (_, old) in self.breakpoints.items():  # hide our INT3 bytes
            if linear <= address < linear + length:
                out[address - linear] = old
        return bytes(out)

    def write_memory(self, linear: int, data: bytes) -> None:
        pieces = [(physical, data[offset:offset + n])
                  for physical, offset, n in self._chunks(linear, len(data))]
        for physical, piece in pieces:  # all translated first: nothing half-written
            if not self.memory.is_mapped(physical, len(piece)):
                raise MemoryFault(f"physical address {physical:#x} is not RAM or ROM")
        for address in list(self.breakpoints):  # a write under a breakpoint updates its byte
            if linear <= address < linear + len(data):
                physical, _ = self.breakpoints[address]
                self.breakpoints[address] = (physical, data[address - linear])
        for physical, piece in pieces:
            self.memory.load_rom_bytes(physical, piece)
        for address, (physical, _) in self.breakpoints.items():
            if not self._kvm_style and linear <= address < linear + len(data):
                self.memory.load_rom_bytes(physical, bytes((INT3,)))
        self._dirty = True  # decoded code may be stale

    # -- breakpoints -----------------------------------------------------------
    def insert_breakpoint(self, linear: int) -> None:
        if linear in self.breakpoints:
            return
        physical = self.translate(linear)
        old = self.read_physical(physical, 1)[0]
        self.breakpoints[linear] = (physical, old)
        if not self._kvm_style:  # kvm: debug registers, the code is left alone
            self.memory.load_rom_bytes(physical, bytes((INT3,)))
            self._dirty = True

    def remove_breakpoint(self, linear: int) -> None:
        entry = self.breakpoints.pop(linear, None)
        if entry is not None and not self._kvm_style:
            physical, old = entry
            self.memory.load_rom_bytes(physical, bytes((old,)))
            self._dirty = True

    def insert_watchpoint(self, linear: int, length: int) -> None:
        if not 1 <= length <= MAX_WATCH_LENGTH:
            raise ValueError(f"watchpoint length {length}: 1 to {MAX_WATCH_LENGTH} bytes")
        self.watchpoints[linear] = (length, self.read_memory(linear, length))

    def remove_watchpoint(self, linear: int) -> None:
        self.watchpoints.pop(linear, None)

    def insert_access_watchpoint(self, linear: int, length: int, kind: str) -> None:
        """`kind` "rwatch" (reads) or "awatch" (reads and writes) on `length` bytes.
        NotImplementedError where the engine cannot (kvm: rwatch)."""
        if not 1 <= length <= MAX_WATCH_LENGTH:
            raise ValueError(f"watchpoint length {length}: 1 to {MAX_WATCH_LENGTH} bytes")
        self.remove_access_watchpoint(linear)
        if self._kvm_style:
            raise NotImplementedError("no data breakpoints under kvm (module docstring)")
        end = linear + length - 1

        def touched(vm: object, address: int, size: int, value: int) -> None:
            self._access_hit = (kind, linear)

        handles = [self.vm.hook_mem_read(touched, linear, end)]
        if kind == "awatch":
            handles.append(self.vm.hook_mem_write(touched, linear, end))
        self.access_watchpoints[linear] = (length, kind, handles)

    def remove_access_watchpoint(self, linear: int) -> None:
        entry = self.access_watchpoints.pop(linear, None)
        if entry is not None and entry[2]:
            self.vm.remove_hook(entry[2])

    def remove_all(self) -> None:
        for linear in list(self.breakpoints):
            self.remove_breakpoint(linear)
        self.hw_breakpoints.clear()
        self.watchpoints.clear()
        for linear in list(self.access_watchpoints):
            self.remove_access_watchpoint(linear)

    # -- running -------------------------------------------------------------
    def _commit(self) -> None:
        if self._dirty:
            # set_state also drops decoded code and translations, so patched
            # bytes and changed registers are what the engine runs next.
            self.engine.set_state(self.state)
            self._dirty = False

    def _capture(self) -> None:
        self.state = self.engine.get_state()

    def _run(self, instructions: int | None, timeout: float | None) -> StopReason:
        """Run free (None) or one instruction (1), #BP stopping at our breakpoints."""
        engine = self.engine
        if self._kvm_style:
            engine.set_guest_debug(instructions == 1, self._kvm_breakpoints())
            try:
                return self.vm.run(timeout)
            finally:
                engine.set_guest_debug(False, ())
        intercept = set(engine.intercept_exceptions)
        if self.breakpoints:
            engine.intercept_exceptions = intercept | {BP}
        engine.max_instructions = instructions
        try:
            return self.vm.run(timeout)
        finally:
            engine.max_instructions = None
            engine.intercept_exceptions = intercept

    def _kvm_breakpoints(self) -> list[int]:
        """Under kvm, breakpoints (Z0 and Z1) are debug registers: four at most; with
        more, the guest runs one instruction at a time (`_steps_only`)."""
        wanted = sorted(set(self.breakpoints) | self.hw_breakpoints)
        return [] if len(wanted) > KVM_DEBUG_REGISTERS else wanted

    def _steps_only(self) -> bool:
        """Whether breakpoints are checked after each instruction instead of by hardware."""
        if self._kvm_style:
            wanted = set(self.breakpoints) | self.hw_breakpoints
            return bool(wanted) and not self._kvm_breakpoints()
        return bool(self.hw_breakpoints) or bool(self.access_watchpoints)

    def _linear_pc(self) -> int:
        return (self.state.segments["cs"].base + self.state.rip) & ((1 << 64) - 1)

    def _changed_watchpoint(self) -> int | None:
        for linear, (length, value) in self.watchpoints.items():
            try:
                now = self.read_memory(linear, length)
            except MemoryFault:
                continue
            if now != value:
                self.watchpoints[linear] = (length, now)
                return linear
        return None

    def _after_vm_stop(self, reason: StopReason) -> Stop | None:
        """A stop that is the debugger's (breakpoint), or None to go on (guest INT3)."""
        self._capture()
        if reason.kind is StopKind.PAUSED:
            return Stop(SIGINT)
        if reason.kind is StopKind.EXCEPTION and reason.vector == BP:
            pc = self._linear_pc()
            if pc in self.breakpoints:
                return Stop(SIGTRAP, "swbreak")
            if pc in self.hw_breakpoints:  # kvm: a debug register matched
                return Stop(SIGTRAP, "hwbreak")
            return None  # the guest's own INT3: deliver it
        self.ended = reason
        return Stop(VM_STOP_SIGNALS.get(reason.kind, SIGTRAP), reason=reason)

    def _deliver_guest_int3(self, timeout: float | None) -> Stop | None:
        """Run the guest's own INT3 through its IDT, with #BP not intercepted."""
        breakpoints = self.breakpoints
        self.breakpoints = {}
        try:
            reason = self._run(1, timeout)
        finally:
            self.breakpoints = breakpoints
        if reason.kind is StopKind.PAUSED and reason.message == "instruction limit":
            self._capture()
            return None
        return self._after_vm_stop(reason)

    def resume(self, step: bool, interrupted, deadline: float | None = None) -> Stop:  # noqa: ANN001
        """Continue (or step one instruction) until something gdb must hear about.

        `interrupted()` says whether the client asked to stop (Ctrl-C).  The
        stub also calls engine.request_pause() when Ctrl-C arrives; running
        in bounded slices makes a request that lands between two runs count
        too.  `deadline` (time.monotonic) is the VM's --timeout.
        """
        if self.ended is not None:
            return Stop(VM_STOP_SIGNALS.get(self.ended.kind, SIGTRAP), reason=self.ended)
        self._commit()
        one_at_a_time = step or self._steps_only() or bool(self.watchpoints)
        while True:
            if interrupted():
                self._capture()
                return Stop(SIGINT)
            slice_ = RUN_SLICE
            if deadline is not None:
                slice_ = min(slice_, deadline - time.monotonic())
                if slice_ <= 0:
                    self.ended = StopReason(StopKind.TIMEOUT, "the --timeout passed under gdb")
                    self._capture()
                    return Stop(VM_STOP_SIGNALS[StopKind.TIMEOUT], reason=self.ended)
            reason = self._run(1 if one_at_a_time else None, slice_)
            if reason.kind is StopKind.TIMEOUT:
                self._capture()
                continue  # a slice ended: look at Ctrl-C and the deadline
            if reason.kind is StopKind.PAUSED and reason.message == "instruction limit":
                self._capture()
                if self._access_hit is not None:
                    (kind, address), self._access_hit = self._access_hit, None
                    return Stop(SIGTRAP, kind, address)
                watched = self._changed_watchpoint()
                if watched is not None:
                    return Stop(SIGTRAP, "watch", watched)
                if step:
                    return Stop(SIGTRAP)
                pc = self._linear_pc()
                if pc in self.hw_breakpoints:
                    return Stop(SIGTRAP, "hwbreak")
                if self._kvm_style and pc in self.breakpoints:
                    return Stop(SIGTRAP, "swbreak")
                continue
            stop = self._after_vm_stop(reason)
            if stop is None:
                stop = self._deliver_guest_int3(slice_)
                if stop is None:
                    if step:
                        return Stop(SIGTRAP)
                    continue
            return stop
