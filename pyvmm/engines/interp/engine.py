"""The interpreter engine (`--engine interp`): every guest instruction in Python.

Run loop: look up the handler for CS:RIP in the decode cache (decoding with
iced-x86 on a miss), call it, repeat, in batches that end at the next
virtual-clock deadline.  Between batches: advance the manual clock by the
instructions executed, fire due timers, drain host events, honour stop
requests and take a pending hardware interrupt from the board's PIC when
RFLAGS.IF=1 and no STI/MOV SS shadow is in effect (SDM Vol. 3A §6.8.3).

Single-step: while RFLAGS.TF is set when an instruction starts, the run loop
executes one instruction per batch and, if it completed (no fault, no
software interrupt), raises the #DB trap with DR6.BS set and the next
instruction's address as the return address (SDM Vol. 3B §17.3.1.4).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pyvmm.cpu.state import (
    CR0_PE,
    FLAG_IF,
    FLAG_TF,
    MSR_IA32_APIC_BASE,
    CpuState,
    SegmentState,
    TableRegister,
)
from pyvmm.engines.base import Engine
from pyvmm.engines.interp import delivery
from pyvmm.engines.interp.cpu import CS, SEG_NAMES, Cpu
from pyvmm.engines.interp.decode import DecodeCache
from pyvmm.engines.interp.faults import (
    BP,
    CONTRIBUTORY,
    DB,
    DE,
    DF,
    ERROR_CODE_VECTORS,
    OF,
    PF,
    VECTOR_NAMES,
    CpuFault,
)
from pyvmm.engines.interp.msr import read_tsc as msr_read_tsc
from pyvmm.engines.interp.replay import InputLogDriver
from pyvmm.engines.interp.signals import EndBatch, SoftwareInterrupt, Unsupported
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.hooks import HookKind, HookSet
from pyvmm.machine.host_timer import wait_event
from pyvmm.machine.stop import StopKind, StopReason

BATCH = 20000  # instructions between host-side checks when no timer is closer
DR6_BS = 1 << 14  # DR6 bit 14: the #DB was a single-step trap (SDM Vol. 3B §17.2.3)


class TripleFault(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _pages(gpa: int, length: int) -> range:
    return range(gpa >> 12, ((gpa + max(length, 1) - 1) >> 12) + 1)


def _copy_seg(seg: SegmentState) -> SegmentState:
    return SegmentState(**vars(seg))


class InterpreterEngine(Engine):
    """Full emulation: decode with iced-x86, execute in Python on the shared board."""

    name = "interp"

    def __init__(self, board, cpu_model: str = "x86-64") -> None:  # noqa: ANN001
        super().__init__(board)
        board.clock.set_source(ClockSource.MANUAL)
        self.cpu = Cpu(board.memory, board.ports, board.mmio, board.stats, cpu_model)
        self.cpu.clock = board.clock
        # The board's local APIC for this vCPU: MSRs 0x1B/0x6E0 and CPUID.01H:EDX.APIC.
        lapics = getattr(board, "lapics", None)
        if lapics:
            self.cpu.apic = lapics[0]
            lapics[0].read_tsc = lambda: msr_read_tsc(self.cpu)
        self.decoder = DecodeCache(self.cpu, board.stats)
        board.memory.write_observers.append(self._memory_written)
        self.ns_per_instruction = 1
        self.intercept_exceptions: set[int] = set()
        self.max_instructions: int | None = None
        # Idle pacing (see _halt_wait): guest time never outruns host time while
        # the guest sleeps.  A time-slicing scheduler sets yield_when_idle and
        # gets PAUSED + idle_until back instead of a sleep inside run().
        self.pace_idle = True
        self.yield_when_idle = False
        self.idle_until: float | None = None
        self._wakeup = threading.Event()
        self._host_anchor_ns: int | None = None
        self.instructions = 0
        self._pause = False
        self._step_completed = True
        # An interrupt acknowledged under another engine but not yet delivered
        # (CpuState.pending_interrupt, from a snapshot): delivered first in run().
        self.pending_interrupt: int | None = None
        board.events.wake = self.wake
        # Hypercall device (pyvmm/paravirt): register access on the live register file.
        from pyvmm.paravirt.abi import RegisterListCpu
        self.cpu_access = RegisterListCpu(self.cpu)
        board.cpu_access = self.cpu_access
        self._fall_through: int | None = None  # where the previous instruction ended
        self.input_log: InputLogDriver | None = None  # record/replay (replay.py)

    def close(self) -> None:
        if getattr(self.board, "cpu_access", None) is self.cpu_access:
            self.board.cpu_access = None
        observers = self.board.memory.write_observers
        if self._memory_written in observers:
            observers.remove(self._memory_written)

    def _memory_written(self, gpa: int, length: int) -> None:
        """A device, hypercall or loader wrote guest memory: drop code decoded from it."""
        code_pages = self.cpu.code_pages
        if code_pages:
            for ppn in _pages(gpa, length):
                if ppn in code_pages:
                    self.cpu.invalidate_code_page(ppn)

    # -- state ---------------------------------------------------------------
    def set_state(self, state: CpuState) -> None:
        cpu = self.cpu
        cpu.regs[:] = [v & 0xFFFFFFFFFFFFFFFF for v in state.gprs]
        cpu.rip = state.rip
        cpu.flags = state.rflags | 2
        cpu.lf_op = 0
        cpu.segs[:] = [_copy_seg(state.segments[name]) for name in SEG_NAMES]
        cpu.ldtr = _copy_seg(state.ldtr)
        cpu.tr = _copy_seg(state.tr)
        cpu.gdtr = TableRegister(state.gdtr.base, state.gdtr.limit)
        cpu.idtr = TableRegister(state.idtr.base, state.idtr.limit)
        cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4, cpu.cr8 = (state.cr0, state.cr2, state.cr3,
                                                      state.cr4, state.cr8)
        cpu.efer = state.efer
        cpu.dr = list(state.dr)
        cpu.apic_base = state.apic_base
        if cpu.apic is not None and state.apic_base != cpu.apic.rdmsr(MSR_IA32_APIC_BASE):
            cpu.apic.wrmsr(MSR_IA32_APIC_BASE, state.apic_base)  # refused bits: kept as is
        cpu.msrs = dict(state.msrs)
        cpu.interrupt_shadow = state.interrupt_shadow
        cpu.halted = state.halted
        cpu.load_fpu_image(state.fpu_image)
        cpu.cpl = state.cpl
        self.pending_interrupt = state.pending_interrupt
        cpu.paging_changed()
        # Guest memory may have been written from outside the CPU since the last run
        # (loaders, tests, snapshot restore): decoded code cannot be trusted.
        self.decoder.reset()

    def _apic_base(self) -> int:
        apic = self.cpu.apic
        return self.cpu.apic_base if apic is None else apic.rdmsr(MSR_IA32_APIC_BASE)

    def get_state(self) -> CpuState:
        cpu = self.cpu
        return CpuState(
            gprs=list(cpu.regs), rip=cpu.rip, rflags=cpu.get_flags(),
            segments={name: _copy_seg(cpu.segs[i]) for i, name in enumerate(SEG_NAMES)},
            ldtr=_copy_seg(cpu.ldtr), tr=_copy_seg(cpu.tr),
            gdtr=TableRegister(cpu.gdtr.base, cpu.gdtr.limit),
            idtr=TableRegister(cpu.idtr.base, cpu.idtr.limit),
            cr0=cpu.cr0, cr2=cpu.cr2, cr3=cpu.cr3, cr4=cpu.cr4, cr8=cpu.cr8, efer=cpu.efer,
            dr=list(cpu.dr), apic_base=self._apic_base(), msrs=dict(cpu.msrs),
            interrupt_shadow=cpu.interrupt_shadow, halted=cpu.halted,
            pending_interrupt=self.pending_interrupt, fpu_image=cpu.fpu_image())

    def wake(self) -> None:
        self._wakeup.set()

    def request_pause(self) -> None:
        self._pause = True

    # -- exceptions ----------------------------------------------------------
    def _where(self) -> str:
        cpu = self.cpu
        return f"{cpu.seg_sel[CS]:04x}:{cpu.rip:x}"

    def _return_ip_for_fault(self, fault: CpuFault) -> int:
        cpu = self.cpu
        if cpu.is_8086 and fault.vector == DE:
            # The 8086 pushes the address of the *next* instruction for a divide error.
            raw, _ = self.decoder.fetch(cpu.rip)
            import iced_x86

            from pyvmm.engines.interp.decode import legacy_alias
            ins = iced_x86.Decoder(16, legacy_alias(raw, cpu.model) or raw, ip=cpu.rip).decode()
            return (cpu.rip + ins.len) & 0xFFFF
        return cpu.rip

    def deliver_fault(self, fault: CpuFault, return_ip: int | None = None,
                      software: bool = False) -> None:
        """Deliver a processor exception, escalating to #DF and triple fault (SDM Table 6-5).

        A stop the board already requested wins: an instruction fetched from
        unmapped memory under `--unmapped stop` reads all-ones (FF FF, #UD), and the
        VM must stop at that fetch, as it stops at a data access, not deliver the #UD.
        """
        if self.board.stop_request is not None:
            return
        cpu = self.cpu
        stats = self.board.stats
        first = fault
        if return_ip is None:
            return_ip = self._return_ip_for_fault(fault)
        while True:
            vector = fault.vector
            stats.count("exceptions", VECTOR_NAMES.get(vector, f"vector {vector}").split()[0])
            if vector == PF and fault.cr2 is not None:
                cpu.cr2 = fault.cr2
            code = fault.error_code
            if cpu.cr0 & CR0_PE and vector in ERROR_CODE_VECTORS and code is None:
                code = 0
            if not cpu.cr0 & CR0_PE:
                code = None
            self._interrupt_hook(vector, code)
            try:
                # EXT (error-code bit 0) marks faults met while delivering an event
                # external to the program: an exception or hardware interrupt (§6.13).
                delivery.deliver(cpu, vector, return_ip, code, software=software,
                                 external=not software)
                return
            except CpuFault as second:
                software = False
                if vector == DF:
                    raise TripleFault(f"{VECTOR_NAMES.get(first.vector, first.vector)} -> "
                                      f"#DF -> {VECTOR_NAMES.get(second.vector, second.vector)}"
                                      ) from None
                contributory = vector in CONTRIBUTORY
                if (contributory and second.vector in CONTRIBUTORY) or (
                        vector == PF and (second.vector in CONTRIBUTORY or second.vector == PF)):
                    fault = CpuFault(DF, 0)
                else:
                    fault = second
                return_ip = cpu.rip

    def _take_interrupt(self, vector: int | None = None) -> None:
        """Deliver INTR: acknowledge the PIC, or `vector` if already acknowledged."""
        cpu = self.cpu
        if vector is None:
            vector = self.board.interrupt_controller.acknowledge()
        stats = self.board.stats
        stats.count("interrupts", f"external {vector:#04x}")
        cpu.halted = False
        self._interrupt_hook(vector, None)
        try:
            delivery.deliver(cpu, vector, cpu.rip, None, external=True)
        except CpuFault as fault:
            self.deliver_fault(fault, cpu.rip)

    # -- hooks (pyvmm/machine/hooks.py) ----------------------------------------
    hook_kinds = frozenset({HookKind.CODE, HookKind.BLOCK, HookKind.MEM_READ,
                            HookKind.MEM_WRITE, HookKind.PORT, HookKind.MMIO,
                            HookKind.INTERRUPT})

    def set_hooks(self, hooks: HookSet) -> None:
        self.hooks = hooks
        hooks.listeners.append(self._hooks_changed)
        self._hooks_changed()

    def _hooks_changed(self) -> None:
        """Code and block hooks are compiled into the decode cache: the handlers of
        instructions a hook covers are wrapped, every other handler is the plain one.
        So a change forgets all decoded code; memory hooks switch the Cpu's fast path."""
        hooks = self.hooks
        assert hooks is not None
        kinds = hooks.kinds()
        wrap = self._wrap_handler if kinds & {HookKind.CODE, HookKind.BLOCK} else None
        if wrap is not None or self.decoder.wrap is not None:
            self.decoder.wrap = wrap
            self.decoder.reset()
        self._fall_through = None
        watched = kinds & {HookKind.MEM_READ, HookKind.MEM_WRITE}
        if watched or self.cpu.mem_hooks is not None:
            self.cpu.set_mem_hooks(hooks if watched else None)

    def _wrap_handler(self, handler: Callable[[], None], lin: int,
                      length: int) -> Callable[[], None]:
        """The handler for the instruction at linear `lin`, with the hooks that see it.

        A block starts wherever execution does not fall through from the
        previous instruction (a taken branch, an interrupt, a fault, the first
        instruction); the interpreter does not know a block's size (0)."""
        hooks = self.hooks
        assert hooks is not None
        code = any(h.begin <= lin <= h.end for h in hooks.by_kind[HookKind.CODE])
        block = any(h.begin <= lin <= h.end for h in hooks.by_kind[HookKind.BLOCK])
        if not (code or block):
            return handler
        end = (lin + length) & self.cpu.lin_mask
        engine = self

        def hooked() -> None:
            if block and lin != engine._fall_through:
                hooks.block(lin, 0)
            engine._fall_through = end
            if code:
                hooks.code(lin, length)
            handler()
        return hooked

    def _interrupt_hook(self, vector: int, error_code: int | None) -> None:
        hooks = self.hooks
        if hooks is not None and hooks.by_kind[HookKind.INTERRUPT]:
            hooks.interrupt(vector, error_code)

    # -- running -------------------------------------------------------------
    def step(self) -> StopReason | None:
        """Execute exactly one instruction (all REP iterations; faults delivered)."""
        stop = self._run_batch(1)
        if self.cpu.tsc_fixup:
            self._fix_tsc(1)
        return stop

    def _fix_tsc(self, executed: int) -> None:
        """A batch ended at RDTSC / RDMSR / WRMSR of the TSC: account for the batch.

        The handler used the clock as of the batch's start; the `executed - 1`
        instructions before it in the batch had already run (1 ns each by
        default), so the counter it saw must include them (SDM Vol. 3B §18.17).
        """
        cpu = self.cpu
        kind, cpu.tsc_fixup = cpu.tsc_fixup, None
        delta = max(0, executed - 1) * self.ns_per_instruction
        if kind == "read":
            regs = cpu.regs
            value = (((regs[2] & 0xFFFFFFFF) << 32) | (regs[0] & 0xFFFFFFFF)) + delta
            regs[0] = value & 0xFFFFFFFF
            regs[2] = (value >> 32) & 0xFFFFFFFF
        elif kind == "write":
            cpu.tsc_offset -= delta

    def _run_batch(self, budget: int) -> StopReason | None:
        """Run up to `budget` instructions; returns a StopReason to stop, else None."""
        cpu = self.cpu
        start = budget
        decode = self.decoder.decode
        try:
            try:
                while budget > 0:
                    budget -= 1
                    handler = cpu.icache.get(cpu.rip)
                    if handler is None:
                        handler = decode()
                    handler()
            except EndBatch as signal:
                # Signal instances are reused: drop the traceback each raise
                # appends to, or it keeps every old frame alive.
                signal.__traceback__ = None
            except SoftwareInterrupt as interrupt:
                interrupt.__traceback__ = None
                self._step_completed = False
                self._software_interrupt(interrupt)
            except CpuFault as fault:
                self._step_completed = False
                if fault.vector in self.intercept_exceptions:
                    self.instructions += start - budget - 1
                    return self._intercepted(fault)
                self.deliver_fault(fault)
        except Unsupported as unsupported:
            self.instructions += start - budget
            return StopReason(StopKind.INTERNAL_ERROR, f"{unsupported.what} at {self._where()}")
        except TripleFault as triple:
            self.instructions += start - budget
            return StopReason(StopKind.TRIPLE_FAULT, f"{triple.message} at {self._where()}")
        except CpuFault as fault:  # escaped delivery (e.g. intercept inside INT n)
            self.instructions += start - budget
            if fault.vector in self.intercept_exceptions:
                return self._intercepted(fault)
            return StopReason(StopKind.INTERNAL_ERROR, f"unhandled {fault} at {self._where()}")
        self.instructions += start - budget
        return None

    def _intercepted(self, fault: CpuFault) -> StopReason:
        """Stop on an intercepted exception, with the state its delivery would have
        started from: a #PF has loaded CR2 (SDM Vol. 3A §4.7), the vector is not taken."""
        if fault.vector == PF and fault.cr2 is not None:
            self.cpu.cr2 = fault.cr2
        return StopReason(StopKind.EXCEPTION, f"{fault} at {self._where()}",
                          vector=fault.vector, error_code=fault.error_code)

    def _single_step(self) -> StopReason | None:
        """One instruction with TF=1: then the #DB single-step trap if it completed.

        An instruction that faulted or was INT n gets no trap: the event's delivery
        cleared TF for its handler (SDM Vol. 3B §17.3.1.4)."""
        cpu = self.cpu
        self._step_completed = True
        stop = self._run_batch(1)
        if stop is not None or not self._step_completed:
            return stop
        cpu.dr[6] = (cpu.dr[6] | DR6_BS) & 0xFFFFFFFF
        if DB in self.intercept_exceptions:
            return StopReason(StopKind.EXCEPTION, f"#DB single-step at {self._where()}",
                              vector=DB)
        try:
            self.deliver_fault(CpuFault(DB), return_ip=cpu.rip)
        except TripleFault as triple:
            return StopReason(StopKind.TRIPLE_FAULT, f"{triple.message} at {self._where()}")
        return None

    def _software_interrupt(self, interrupt: SoftwareInterrupt) -> None:
        """INT n / INT3 / INTO: a trap whose return address is the next instruction."""
        cpu = self.cpu
        vector = interrupt.vector
        if vector in self.intercept_exceptions and vector in (BP, OF):
            raise CpuFault(vector)
        self.board.stats.count("software interrupts", f"int {vector:#04x}")
        self._interrupt_hook(vector, None)
        try:
            delivery.deliver(cpu, vector, interrupt.return_ip, None, software=True)
        except CpuFault as fault:
            if fault.vector in self.intercept_exceptions:
                raise
            self.deliver_fault(fault, cpu.rip)

    def run(self, timeout: float | None = None) -> StopReason:
        board = self.board
        cpu = self.cpu
        clock = board.clock
        stats = board.stats
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        if self._host_anchor_ns is None:  # guest time 0 = the first run's start
            self._host_anchor_ns = time.monotonic_ns() - clock.now_ns()
        self.idle_until = None
        pic = board.interrupt_controller
        base_instructions = self.instructions
        base_misses = self.decoder.misses
        base_tlb_hits = cpu.tlb_hits
        self._pause = False
        try:
            while True:
                if board.stop_request is not None:
                    reason, board.stop_request = board.stop_request, None
                    return reason
                if self._pause:
                    self._pause = False
                    return StopReason(StopKind.PAUSED, "pause requested")
                if deadline is not None and time.monotonic() >= deadline:
                    return StopReason(StopKind.TIMEOUT, f"after {timeout} s at {self._where()}")
                if self.pending_interrupt is not None:  # acknowledged before a snapshot
                    vector, self.pending_interrupt = self.pending_interrupt, None
                    self._take_interrupt(vector)
                # Hardware interrupts (INTR) are taken between instructions when IF=1 and
                # no STI / MOV SS shadow is pending.
                if cpu.flags & FLAG_IF and not cpu.interrupt_shadow and \
                        pic.interrupt_pending():
                    self._take_interrupt()
                if cpu.halted:
                    stop = self._halt_wait(deadline)
                    if stop is not None:
                        return stop
                    continue
                budget = BATCH
                if self.max_instructions is not None:
                    left = self.max_instructions - (self.instructions - base_instructions)
                    if left <= 0:
                        return StopReason(StopKind.PAUSED, "instruction limit")
                    budget = min(budget, left)
                next_deadline = clock.next_deadline()
                if next_deadline is not None:
                    until = (next_deadline - clock.now_ns()) // self.ns_per_instruction
                    budget = max(1, min(budget, until))
                if self.input_log is not None:
                    budget = self.input_log.limit(budget)
                if cpu.interrupt_shadow:
                    budget = 1
                    cpu.interrupt_shadow = False
                before = self.instructions
                if cpu.flags & FLAG_TF:
                    stop = self._single_step()
                else:
                    stop = self._run_batch(budget)
                if cpu.tsc_fixup:
                    self._fix_tsc(self.instructions - before)
                clock.advance((self.instructions - before) * self.ns_per_instruction)
                clock.run_due()
                board.events.drain()
                if self.input_log is not None and stop is None:
                    stop = self.input_log.apply_due()
                if stop is not None:
                    return stop
        except Unsupported as unsupported:  # e.g. a task gate met by a hardware interrupt
            return StopReason(StopKind.INTERNAL_ERROR, f"{unsupported.what} at {self._where()}")
        except Exception as error:  # noqa: BLE001 - the run-loop boundary
            return StopReason(StopKind.INTERNAL_ERROR,
                              f"at {self._where()} (rip {cpu.rip:#x}): "
                              f"{type(error).__name__}: {error}")
        finally:
            run = self.instructions - base_instructions
            misses = self.decoder.misses - base_misses
            stats.instructions = (stats.instructions or 0) + run
            stats.count("decode", "miss", misses)
            stats.count("decode", "hit", max(0, run - misses))
            hits = cpu.tlb_hits - base_tlb_hits
            if hits:
                stats.count("tlb", "hit", hits)
            # Wall time is the caller's to measure (VirtualMachine.run, the hypervisor).

    def _halt_wait(self, deadline: float | None) -> StopReason | None:
        """HLT: with IF=0 the VM is stopped; with IF=1 skip guest time to the next timer."""
        board = self.board
        cpu = self.cpu
        if not cpu.flags & FLAG_IF:
            return StopReason(StopKind.HALTED, f"HLT at {cpu.seg_sel[CS]:04x}:{cpu.rip:x} "
                                               "with interrupts disabled")
        clock = board.clock
        if self.input_log is not None and self.input_log.replaying:
            handled = self.input_log.halted()
            if handled is not False:
                board.events.drain()
                return handled
        next_deadline = clock.next_deadline()
        if next_deadline is not None and self.pace_idle:
            # Guest time runs at one nanosecond per instruction, slower than the
            # host's; an idle guest catches up, but never runs ahead of host
            # time (QEMU's icount "sleep=on"): a sleeping guest sleeps, and
            # its timers fire at host speed instead of as fast as Python can.
            ahead_ns = next_deadline - (time.monotonic_ns() - self._host_anchor_ns)
            if ahead_ns > 0:
                if self.yield_when_idle:
                    self.idle_until = time.monotonic() + ahead_ns / 1e9
                    return StopReason(StopKind.PAUSED, "idle until the next guest timer")
                if self._idle_wait(ahead_ns / 1e9, deadline):
                    # A host event (input) or a stop came first: guest time
                    # moves only as far as host time has.
                    clock.advance_to(time.monotonic_ns() - self._host_anchor_ns)
                    if self.input_log is not None:
                        self.input_log.clock_jumped(clock.now_ns())
                    clock.run_due()
                    board.events.drain()
                    return None
        if next_deadline is not None:
            clock.advance_to(next_deadline)
            clock.run_due()
            board.events.drain()
            return None
        # Nothing will ever fire on the guest clock: wait for host events (input).
        while not board.events.pending():
            if board.stop_request is not None or self._pause:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            self._idle_wait(None, deadline)
        board.events.drain()
        return None

    def _idle_wait(self, seconds: float | None, deadline: float | None) -> bool:
        """Sleep until `seconds` pass, the run deadline, or a wake(); True if woken."""
        if deadline is not None:
            left = deadline - time.monotonic()
            seconds = left if seconds is None else min(seconds, left)
        if seconds is not None and seconds <= 0:
            return False
        idle_from = time.perf_counter()
        woken = wait_event(self._wakeup, seconds)  # any length, in bounded pieces
        self.board.stats.idle_seconds += time.perf_counter() - idle_from
        self._wakeup.clear()
        board = self.board
        return woken or board.events.pending() or board.stop_request is not None \
            or self._pause or (deadline is not None and time.monotonic() >= deadline)
