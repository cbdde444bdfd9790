"""One KVM vCPU: its registers, the KVM_RUN loop and the dispatch of every VM exit.

Devices stay in Python, so each port access, MMIO access and interrupt
comes back through this loop (KVM API, Documentation/virt/kvm/api.rst,
"KVM_RUN" and "struct kvm_run").  The VM-wide objects (fds, memory slots)
are in `vm.py`; `engine.py` ties one VM and its vCPU to a board.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from pyvmm.cpu.cpuid import CPUID_1_ECX_TSC_DEADLINE, kvm_cpuid_policy
from pyvmm.cpu.state import FLAG_IF, MSR_IA32_APIC_BASE, MSR_IA32_TSC, CpuState
from pyvmm.engines.kvm import complete, kick
from pyvmm.engines.kvm import ioctls as k
from pyvmm.engines.kvm import state as conv
from pyvmm.engines.kvm.stats import HaltWait
from pyvmm.engines.kvm.vm import KvmVm
from pyvmm.machine.clock import ClockSource, VirtualClock
from pyvmm.machine.hooks import HookKind
from pyvmm.machine.host_timer import TimerChannel, wait_seconds_until
from pyvmm.machine.stop import StopKind, StopReason

if TYPE_CHECKING:
    from pyvmm.machine.board import Board
    from pyvmm.machine.hooks import HookSet

MAX_RUN_TIMEOUT = 1e9  # seconds; a longer run() timeout means no limit
# --irqchip kernel: a HLT never exits, so the vCPU is kicked out to look whether it
# halted with IF=0 (halted for good) after this long without an exit, doubling up
# to the maximum while it is not.
HALT_CHECK_MIN_NS = 50_000_000
HALT_CHECK_MAX_NS = 200_000_000

# kvm_run.system_event.type (KVM API, KVM_EXIT_SYSTEM_EVENT).
_SYSTEM_EVENT_SHUTDOWN = 1
_SYSTEM_EVENT_RESET = 2
_SYSTEM_EVENT_CRASH = 3

_EXIT_NAMES = k.EXIT_REASON_NAMES
DB_VECTOR = 1
BP_VECTOR = 3
MAX_HW_BREAKPOINTS = 4  # DR0-DR3
DR7_RESERVED_ONE = 1 << 10
DR6_B0_B3 = 0xF


class MsrDevice(Protocol):
    def rdmsr(self, index: int) -> int: ...

    def wrmsr(self, index: int, value: int) -> bool: ...


def host_ns(clock: VirtualClock, guest_ns: int) -> int:
    """A clock deadline as a host monotonic time.

    Exact for the HOST source; for VCPU it assumes guest time keeps pace
    with host time from now on, so a vCPU the host scheduler delays is
    woken early, finds nothing due, and this is computed again."""
    return time.monotonic_ns() + (guest_ns - clock.now_ns())


class KvmVcpu:
    """One vCPU of a `KvmVm`, running the guest on `board`."""

    def __init__(self, vm: KvmVm, board: Board, index: int, clock_source: ClockSource,
                 *, tsc_deadline: bool = False) -> None:
        self.vm = vm
        self.board = board
        self.index = index
        self.clock_source = clock_source  # restored after an interpreter fallback
        self.hooks: HookSet | None = None
        self.waker: TimerChannel | None = None  # set by the engine: the VM's host-timer slot
        self.fd = -1
        self.run_map: mmap.mmap | None = None
        self.kvm_run: k.kvm_run | None = None
        self._lock = threading.Lock()
        self._thread_id: int | None = None  # the vCPU thread while inside run()
        self._wakeup = threading.Event()
        self._pause_requested = False
        self.halted = False
        self.io_pending = False  # an IO/MMIO exit KVM completes on the next KVM_RUN
        self._pending_vector: int | None = None  # acknowledged but not yet accepted by KVM
        self._extra_msrs: set[int] = set()
        self._timeout: float | None = None  # this run()'s, for the TIMEOUT message
        self._guest_debug: tuple[int, tuple[int, ...]] = (0, ())  # control, breakpoints
        # MSRs the board's devices own (KVM_EXIT_X86_RDMSR/WRMSR): index -> device with
        # rdmsr(index) -> int and wrmsr(index, value) -> bool; set by the engine.
        self.msr_devices: dict[int, MsrDevice] = {}
        # --irqchip kernel: KVM's chips deliver interrupts and handle HLT themselves;
        # the time its HLT waits inside KVM_RUN comes from KVM's statistics (stats.py).
        self.kernel_irqchip = False
        self.halt_wait: HaltWait | None = None
        self._halt_wait_ns = 0  # its reading after the last KVM_RUN
        self._halt_check_ns = HALT_CHECK_MIN_NS
        self.fd = vm.create_vcpu(index)
        self.run_map = mmap.mmap(self.fd, vm.vcpu_mmap_size(), mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        self.kvm_run = k.kvm_run.from_buffer(self.run_map)
        self._set_cpuid(tsc_deadline)
        supported = set(vm.msr_index_list())
        self._msr_indices = [m for m in conv.DEFAULT_MSRS if m in supported]

    def _set_cpuid(self, tsc_deadline: bool) -> None:
        """KVM_SET_CPUID2 from pyvmm's policy; `tsc_deadline`: the local APIC serving
        this vCPU has the TSC-deadline timer mode, so CPUID.01H:ECX[24] says so (SDM
        Vol. 3A, "TSC-Deadline Mode").  KVM's own LAPIC offers the mode (its LVT
        timer-mode mask) only when the guest's CPUID has this bit."""
        entries = kvm_cpuid_policy(self.vm.supported_cpuid)
        if tsc_deadline:
            entries = [replace(e, ecx=e.ecx | CPUID_1_ECX_TSC_DEADLINE) if e.function == 1
                       else e for e in entries]
        buf = k.kvm_cpuid2_with(len(entries))()
        buf.nent = len(entries)
        for out, e in zip(buf.entries, entries, strict=True):
            out.function, out.index, out.flags = e.function, e.index, e.flags
            out.eax, out.ebx, out.ecx, out.edx = e.eax, e.ebx, e.ecx, e.edx
        self.ioctl(k.KVM_SET_CPUID2, buf, "KVM_SET_CPUID2")

    # -- state ----------------------------------------------------------------
    def ioctl(self, request: int, struct: ctypes.Structure, what: str) -> None:
        k.ioctl(self.fd, request, struct, what)

    def complete_pending_io(self) -> None:
        """Let KVM finish an IO/MMIO exit without running the guest (KVM API:
        the state is only consistent after re-entering KVM_RUN; immediate_exit
        makes that re-entry return at once)."""
        if not self.io_pending:
            return
        assert self.kvm_run is not None
        self.kvm_run.immediate_exit = 1
        result, err = k.ioctl_raw(self.fd, k.KVM_RUN)
        self.kvm_run.immediate_exit = 0
        self.io_pending = False
        if result < 0 and err != errno.EINTR:
            raise k.KvmError("KVM_RUN (completing I/O)", err)

    def set_state(self, state: CpuState) -> None:
        self.complete_pending_io()
        apic = self.msr_devices.get(MSR_IA32_APIC_BASE)
        if apic is not None and state.apic_base != apic.rdmsr(MSR_IA32_APIC_BASE):
            apic.wrmsr(MSR_IA32_APIC_BASE, state.apic_base)  # refused bits: kept as is
        self.ioctl(k.KVM_SET_SREGS, conv.sregs_from_state(state), "KVM_SET_SREGS")
        self.ioctl(k.KVM_SET_REGS, conv.regs_from_state(state), "KVM_SET_REGS")
        values = {m: v for m, v in state.msrs.items() if m not in conv.FIELD_MSRS}
        self._extra_msrs = set(values) - set(self._msr_indices)
        if values:
            msrs = conv.msrs_struct(values)
            done = k.ioctl(self.fd, k.KVM_SET_MSRS, msrs, "KVM_SET_MSRS")
            if done != msrs.nmsrs:
                bad = msrs.entries[done]
                raise k.KvmError(f"KVM_SET_MSRS of MSR {bad.index:#x} = {bad.data:#x}",
                                 errno.EINVAL)
        if state.fpu_image is not None:
            if self.vm.xsave_ok:
                xsave = k.kvm_xsave()
                self.ioctl(k.KVM_GET_XSAVE, xsave, "KVM_GET_XSAVE")
                conv.fxsave_into_xsave(state.fpu_image, xsave)
                self.ioctl(k.KVM_SET_XSAVE, xsave, "KVM_SET_XSAVE")
            else:
                self.ioctl(k.KVM_SET_FPU, conv.fxsave_to_fpu(state.fpu_image), "KVM_SET_FPU")
        self.ioctl(k.KVM_SET_DEBUGREGS, conv.debugregs_from_state(state), "KVM_SET_DEBUGREGS")
        events = k.kvm_vcpu_events()
        self.ioctl(k.KVM_GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS")
        events.interrupt.shadow = k.KVM_X86_SHADOW_INT_STI if state.interrupt_shadow else 0
        # An acknowledged, undelivered interrupt is re-queued for injection at the
        # next entry (KVM API: KVM_SET_VCPU_EVENTS always applies `interrupt`).
        events.interrupt.injected = int(state.pending_interrupt is not None)
        events.interrupt.nr = state.pending_interrupt or 0
        events.interrupt.soft = 0
        events.flags = k.KVM_VCPUEVENT_VALID_SHADOW
        self.ioctl(k.KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS")
        halted = state.halted and state.pending_interrupt is None  # it wakes HLT
        if self.kernel_irqchip:  # KVM runs HLT itself: its vCPU waits in the kernel
            mp = k.KVM_MP_STATE_HALTED if halted else k.KVM_MP_STATE_RUNNABLE
            self.ioctl(k.KVM_SET_MP_STATE, k.kvm_mp_state(mp), "KVM_SET_MP_STATE")
        else:
            self.halted = halted
        self._pending_vector = None

    def get_state(self) -> CpuState:
        self.complete_pending_io()
        state = CpuState()
        regs = k.kvm_regs()
        self.ioctl(k.KVM_GET_REGS, regs, "KVM_GET_REGS")
        conv.regs_into_state(regs, state)
        sregs = k.kvm_sregs()
        self.ioctl(k.KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        conv.sregs_into_state(sregs, state)
        indices = sorted(set(self._msr_indices) | self._extra_msrs)
        msrs = conv.msrs_struct(dict.fromkeys(indices, 0))
        done = k.ioctl(self.fd, k.KVM_GET_MSRS, msrs, "KVM_GET_MSRS")
        state.msrs = conv.msrs_values(msrs, done)
        if self.vm.xsave_ok:
            xsave = k.kvm_xsave()
            self.ioctl(k.KVM_GET_XSAVE, xsave, "KVM_GET_XSAVE")
            state.fpu_image = conv.xsave_to_fxsave(xsave)
        else:
            fpu = k.kvm_fpu()
            self.ioctl(k.KVM_GET_FPU, fpu, "KVM_GET_FPU")
            state.fpu_image = conv.fpu_to_fxsave(fpu)
        debug = k.kvm_debugregs()
        self.ioctl(k.KVM_GET_DEBUGREGS, debug, "KVM_GET_DEBUGREGS")
        conv.debugregs_into_state(debug, state)
        events = k.kvm_vcpu_events()
        self.ioctl(k.KVM_GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS")
        state.interrupt_shadow = bool(events.interrupt.shadow)
        state.halted = self.halted
        if self.kernel_irqchip:
            mp = k.kvm_mp_state()
            self.ioctl(k.KVM_GET_MP_STATE, mp, "KVM_GET_MP_STATE")
            state.halted = mp.mp_state == k.KVM_MP_STATE_HALTED
        # Queued in KVM (injected at the next entry) or still waiting here.
        state.pending_interrupt = (events.interrupt.nr if events.interrupt.injected
                                   else self._pending_vector)
        return state

    def guest_tsc(self) -> int:
        """The guest's TSC now (IA32_TSC through KVM_GET_MSRS: host TSC, scaled, plus
        KVM's offset)."""
        msrs = conv.msrs_struct({MSR_IA32_TSC: 0})
        k.ioctl(self.fd, k.KVM_GET_MSRS, msrs, "KVM_GET_MSRS (IA32_TSC)")
        return msrs.entries[0].data

    def tsc_khz(self) -> int:
        """KVM_GET_TSC_KHZ: the frequency the guest's TSC counts at."""
        return k.ioctl(self.fd, k.KVM_GET_TSC_KHZ, None, "KVM_GET_TSC_KHZ")

    def _guest_if(self) -> bool:
        """RFLAGS.IF as the vCPU has it now (kvm_run.if_flag is only as fresh as the last exit)."""
        regs = k.kvm_regs()
        self.ioctl(k.KVM_GET_REGS, regs, "KVM_GET_REGS")
        return bool(regs.rflags & FLAG_IF)

    def register_state(self) -> CpuState:
        """The general and segment registers only (KVM_GET_REGS + KVM_GET_SREGS)."""
        regs, sregs = k.kvm_regs(), k.kvm_sregs()
        self.ioctl(k.KVM_GET_REGS, regs, "KVM_GET_REGS")
        self.ioctl(k.KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        state = CpuState()
        conv.regs_into_state(regs, state)
        conv.sregs_into_state(sregs, state)
        return state

    def where(self) -> str:
        """"rip 0x... in <mode> mode", for stop messages."""
        state = self.register_state()
        cs = state.segments["cs"]
        return f"cs:rip {cs.selector:#06x}:{state.rip:#x} in {state.mode_name()} mode"

    # -- debugging ---------------------------------------------------------------
    def set_guest_debug(self, single_step: bool, breakpoints: Sequence[int] = ()) -> None:
        """KVM_SET_GUEST_DEBUG: exit after each instruction (a #DB the guest never
        sees), and/or before executing any of up to four linear addresses.

        The breakpoints are the debug registers' instruction breakpoints (SDM
        Vol. 3B, "Debug Registers": DR0-DR3 addresses, DR7 L0-L3 enables with
        R/W = 00 and LEN = 00), used by KVM for the guest (KVM_GUESTDBG_USE_HW_BP).
        INT3 patching (KVM_GUESTDBG_USE_SW_BP) is not used: this host's KVM
        delivers the INT3 of emulated ring-0 code to the guest instead of exiting.
        """
        if len(breakpoints) > MAX_HW_BREAKPOINTS:
            raise ValueError(f"at most {MAX_HW_BREAKPOINTS} hardware breakpoints")
        control = 0
        debug = k.kvm_guest_debug()
        if single_step or breakpoints:
            control = k.KVM_GUESTDBG_ENABLE
            if single_step:
                control |= k.KVM_GUESTDBG_SINGLESTEP
            if breakpoints:
                control |= k.KVM_GUESTDBG_USE_HW_BP
                dr7 = DR7_RESERVED_ONE
                for slot, address in enumerate(breakpoints):
                    debug.debugreg[slot] = address
                    dr7 |= 1 << (2 * slot)  # Ln: local enable; R/W and LEN stay 00
                debug.debugreg[7] = dr7
        debug.control = control
        key = (control, tuple(breakpoints))
        if key != self._guest_debug:
            self.ioctl(k.KVM_SET_GUEST_DEBUG, debug, "KVM_SET_GUEST_DEBUG")
            self._guest_debug = key

    def _debug_exit(self, run: k.kvm_run) -> StopReason:
        """KVM_EXIT_DEBUG: a breakpoint register matched (DR6 B0-B3; RIP is at the
        instruction, not yet executed), or the single step is done."""
        debug = run.exit.debug
        control, breakpoints = self._guest_debug
        if debug.exception == DB_VECTOR and debug.dr6 & DR6_B0_B3 and breakpoints:
            return StopReason(StopKind.EXCEPTION, f"breakpoint at {debug.pc:#x}",
                              vector=BP_VECTOR)
        if debug.exception == DB_VECTOR and control & k.KVM_GUESTDBG_SINGLESTEP:
            return StopReason(StopKind.PAUSED, "instruction limit")
        return StopReason(StopKind.INTERNAL_ERROR, f"unexpected KVM debug exit (exception "
                                                   f"{debug.exception}) at {self.where()}")

    # -- kicking ----------------------------------------------------------------
    def kick(self) -> None:
        """Thread-safe: make the vCPU thread leave KVM_RUN (or its HLT wait) soon."""
        self._wakeup.set()
        with self._lock:
            if self._thread_id is not None and self.kvm_run is not None:
                self.kvm_run.immediate_exit = 1
                signal.pthread_kill(self._thread_id, kick.KICK_SIGNAL)

    def request_pause(self) -> None:
        self._pause_requested = True
        self.kick()

    def _wake_target(self, run_deadline: int | None) -> int | None:
        clock_deadline = self.board.clock.next_deadline()
        target = run_deadline
        if self.kernel_irqchip:
            check = time.monotonic_ns() + self._halt_check_ns
            target = check if target is None else min(target, check)
        if clock_deadline is not None:
            host = host_ns(self.board.clock, clock_deadline)
            target = host if target is None else min(target, host)
        return target

    # -- the run loop ---------------------------------------------------------
    def run(self, timeout: float | None = None) -> StopReason:
        assert self.kvm_run is not None and self.waker is not None
        self.vm.sync_memory(self.board.memory)
        if timeout is not None and not 0 <= timeout < MAX_RUN_TIMEOUT:
            timeout = None if timeout >= MAX_RUN_TIMEOUT else 0.0  # inf: no limit; NaN/<0: now
        run_deadline = None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
        self._timeout = timeout
        self._pause_requested = False  # a pause asked for between runs is stale (as interp)
        old_mask = kick.block_kick()
        unblocked = k.kvm_signal_mask_sigset(
            k.KERNEL_SIGSET_BYTES, kick.sigset_bits(old_mask - {kick.KICK_SIGNAL}))
        k.ioctl(self.fd, k.KVM_SET_SIGNAL_MASK, unblocked, "KVM_SET_SIGNAL_MASK")
        with self._lock:
            self._thread_id = threading.get_ident()
        self.board.clock.vcpu_started()
        try:
            reason = self._loop(run_deadline)
            self.complete_pending_io()
            return reason
        finally:
            self.board.clock.vcpu_stopped()
            with self._lock:
                self._thread_id = None
            self.waker.set_target(None)
            self.kvm_run.immediate_exit = 0
            kick.consume_kicks()
            kick.restore_mask(old_mask)

    def _service(self, run_deadline: int | None) -> StopReason | None:
        """Between exits: host events, due timers, then the ways a run can end."""
        board = self.board
        board.events.drain()
        board.clock.run_due()
        if board.memory.layout_version != self.vm.layout_version:
            self.vm.sync_memory(board.memory)
        if board.stop_request is not None:
            reason, board.stop_request = board.stop_request, None
            return reason
        if self._pause_requested:
            self._pause_requested = False
            return StopReason(StopKind.PAUSED, "pause requested")  # as interp says it
        if run_deadline is not None and time.monotonic_ns() >= run_deadline:
            self.complete_pending_io()  # so the location is the next instruction's
            return StopReason(StopKind.TIMEOUT, f"after {self._timeout} s at {self.where()}")
        return None

    def _loop(self, run_deadline: int | None) -> StopReason:
        run = self.kvm_run
        assert run is not None and self.waker is not None
        stats = self.board.stats
        pic = self.board.interrupt_controller
        while True:
            self._wakeup.clear()
            reason = self._service(run_deadline)
            if reason is not None:
                return reason
            target = self._wake_target(run_deadline)
            if self.halted:
                if not self._guest_if():
                    return StopReason(StopKind.HALTED, self.where())
                if pic.interrupt_pending() or self._pending_vector is not None:
                    self.halted = False
                else:
                    if self.board.events.pending():
                        continue
                    self.waker.set_target(target)
                    # Bounded (host_timer.MAX_WAIT_SECONDS): the loop re-checks.
                    wait = None if target is None else wait_seconds_until(
                        target, time.monotonic_ns())
                    idle_from = time.perf_counter()
                    self.board.clock.idle_begin()
                    self._wakeup.wait(wait)
                    self.board.clock.idle_end()
                    stats.idle_seconds += time.perf_counter() - idle_from
                    continue
            self._inject(run)
            self.waker.set_target(target)
            start = time.perf_counter()
            result, err = k.ioctl_raw(self.fd, k.KVM_RUN)
            ran = time.perf_counter() - start
            halted = 0.0 if self.halt_wait is None else self._halted_in_kvm()
            stats.guest_seconds = (stats.guest_seconds or 0.0) + max(0.0, ran - halted)
            run.immediate_exit = 0
            self.io_pending = False
            if result < 0:
                if err == errno.EINTR:
                    stats.count("exits", "intr")
                    if self.hooks is not None and self.hooks.by_kind[HookKind.EXIT]:
                        self.hooks.exit("intr")
                    kick.consume_kicks()
                    if self.kernel_irqchip:
                        if halted and self._halted_for_good():
                            return StopReason(StopKind.HALTED, self.where())
                        self._halt_check_ns = min(2 * self._halt_check_ns,
                                                  HALT_CHECK_MAX_NS)
                    continue
                if err == errno.EAGAIN:
                    continue
                return StopReason(StopKind.INTERNAL_ERROR,
                                  f"KVM_RUN failed: {os.strerror(err)} (errno {err})")
            self._halt_check_ns = HALT_CHECK_MIN_NS  # the guest is active: look soon
            reason = self.handle_exit(run)
            if reason is not None:
                return reason

    def _halted_in_kvm(self) -> float:
        """Seconds the last KVM_RUN waited in the guest's HLT (halt_wait_ns): guest
        time as a halt's under --irqchip user (VirtualClock.idle_for), idle in stats."""
        assert self.halt_wait is not None
        total = self.halt_wait.read()
        waited, self._halt_wait_ns = total - self._halt_wait_ns, total
        if waited <= 0:
            return 0.0
        self.board.clock.idle_for(waited)
        self.board.stats.idle_seconds += waited / 1e9
        return waited / 1e9

    def _halted_for_good(self) -> bool:
        """Under --irqchip kernel, after a KVM_RUN that waited in HLT: is the vCPU
        still halted with IF=0, which nothing on this PC wakes (SDM Vol. 2A, HLT:
        NMI, SMI, INIT)?"""
        mp = k.kvm_mp_state()
        self.ioctl(k.KVM_GET_MP_STATE, mp, "KVM_GET_MP_STATE")
        return mp.mp_state == k.KVM_MP_STATE_HALTED and not self._guest_if()

    def _inject(self, run: k.kvm_run) -> None:
        """Hand the PIC's interrupt to KVM when the guest can take it, else ask
        for an exit when it can (KVM API: KVM_INTERRUPT, request_interrupt_window)."""
        if self.kernel_irqchip:
            return
        pic = self.board.interrupt_controller
        if self._pending_vector is None and not pic.interrupt_pending():
            run.request_interrupt_window = 0
            return
        if not (run.ready_for_interrupt_injection and run.if_flag):
            run.request_interrupt_window = 1
            return
        vector = self._pending_vector if self._pending_vector is not None else pic.acknowledge()
        result, err = k.ioctl_raw(self.fd, k.KVM_INTERRUPT, k.kvm_interrupt(vector))
        if result < 0:
            if err != errno.EEXIST:
                raise k.KvmError("KVM_INTERRUPT", err)
            self._pending_vector = vector  # KVM still holds one; retry after the next exit
            run.request_interrupt_window = 1
            return
        self._pending_vector = None
        stats = self.board.stats
        stats.count("interrupts", f"external {vector:#04x}")
        if self.hooks is not None and self.hooks.by_kind[HookKind.INTERRUPT]:
            self.hooks.interrupt(vector, None)
        run.ready_for_interrupt_injection = 0  # taken until KVM says otherwise
        run.request_interrupt_window = 1 if pic.interrupt_pending() else 0

    def handle_exit(self, run: k.kvm_run) -> StopReason | None:
        reason = run.exit_reason
        name = _EXIT_NAMES.get(reason, f"reason {reason}")
        self.board.stats.count("exits", name)
        if self.hooks is not None and self.hooks.by_kind[HookKind.EXIT]:
            self.hooks.exit(name)
        if reason == k.KVM_EXIT_IO:
            self._handle_io(run)
        elif reason == k.KVM_EXIT_MMIO:
            self._handle_mmio(run)
        elif reason == k.KVM_EXIT_HLT:
            self.halted = True
            if not run.if_flag:
                # Nothing but NMI/SMI/INIT wakes HLT with IF=0 (SDM Vol. 2A, HLT);
                # this PC has none of those, so the guest is stopped for good.
                return StopReason(StopKind.HALTED, self.where())
        elif reason in (k.KVM_EXIT_IRQ_WINDOW_OPEN, k.KVM_EXIT_INTR):
            pass
        elif reason == k.KVM_EXIT_SHUTDOWN:
            return StopReason(StopKind.TRIPLE_FAULT, f"shutdown at {self.where()}")
        elif reason == k.KVM_EXIT_FAIL_ENTRY:
            return StopReason(StopKind.INTERNAL_ERROR, self._describe_fail_entry(run))
        elif reason == k.KVM_EXIT_INTERNAL_ERROR:
            if run.exit.internal.suberror == k.KVM_INTERNAL_ERROR_EMULATION:
                if self._complete_failed_instruction(run):
                    return None
                return self._emulate_one()
            return StopReason(StopKind.INTERNAL_ERROR, self._describe_internal_error(run))
        elif reason in (k.KVM_EXIT_X86_RDMSR, k.KVM_EXIT_X86_WRMSR):
            self._handle_msr(run.exit.msr, reason == k.KVM_EXIT_X86_WRMSR)
        elif reason == k.KVM_EXIT_DEBUG:
            return self._debug_exit(run)
        elif reason == k.KVM_EXIT_SYSTEM_EVENT:
            return self._system_event(run)
        else:
            return StopReason(StopKind.INTERNAL_ERROR,
                              f"unhandled KVM exit reason {reason} ({name}) at {self.where()}")
        return None

    def _handle_io(self, run: k.kvm_run) -> None:
        """Port I/O, including string I/O: `count` items of `size` bytes at
        run + data_offset (KVM API, KVM_EXIT_IO)."""
        assert self.run_map is not None
        io = run.exit.io
        size, port, count = io.size, io.port, io.count
        start = io.data_offset
        ports = self.board.ports
        self.io_pending = True
        if io.direction == k.KVM_EXIT_IO_OUT:
            data = self.run_map[start:start + size * count]
            for i in range(count):
                ports.write(port, size, int.from_bytes(data[i * size:(i + 1) * size], "little"))
        else:
            data = b"".join(ports.read(port, size).to_bytes(size, "little")
                            for _ in range(count))
            self.run_map[start:start + size * count] = data

    def _handle_mmio(self, run: k.kvm_run) -> None:
        mmio = run.exit.mmio
        address, length = mmio.phys_addr, mmio.len
        self.io_pending = True
        if mmio.is_write:
            region = self.board.memory.region_at(address, length)
            if region is not None and region.readonly:
                self.board.stats.count("mmio", "rom-write-dropped")
                return
            value = int.from_bytes(bytes(mmio.data)[:length], "little")
            self.board.mmio.write(address, length, value)
        else:
            value = self.board.mmio.read(address, length)
            ctypes.memmove(mmio.data, value.to_bytes(length, "little"), length)

    def _handle_msr(self, msr: k._ExitMsr, is_write: bool) -> None:
        """A guest RDMSR/WRMSR of an MSR a board device owns (the local APIC's
        IA32_APIC_BASE); `error` = 1 makes KVM raise #GP(0) in the guest."""
        device = self.msr_devices.get(msr.index)
        self.io_pending = True  # KVM completes the instruction on the next entry
        if device is None:
            msr.error = 1
            return
        if not is_write:
            msr.data, msr.error = device.rdmsr(msr.index), 0
            return
        if not device.wrmsr(msr.index, msr.data):
            msr.error = 1
            return
        msr.error = 0
        if msr.index == MSR_IA32_APIC_BASE:
            # KVM's own copy drives CPUID.01H:EDX.APIC (its runtime CPUID update):
            # keep it equal to the APIC's (a host-initiated write is not filtered).
            msrs = conv.msrs_struct({MSR_IA32_APIC_BASE: device.rdmsr(msr.index)})
            k.ioctl(self.fd, k.KVM_SET_MSRS, msrs, "KVM_SET_MSRS (IA32_APIC_BASE)")

    def _complete_failed_instruction(self, run: k.kvm_run) -> bool:
        """A ring-0 instruction KVM's emulator refused, completed here (kvm/complete.py)."""
        state = self.register_state()
        cs = state.segments["cs"]
        bitness = 64 if state.long_mode_active and cs.l else (32 if cs.db else 16)
        name = complete.complete(self, run.exit.internal, bitness, state.cpl)
        if name is None:
            return False
        self.board.stats.count("kvm-completed", name)
        return True

    def _emulate_one(self) -> StopReason | None:
        """KVM's instruction emulator gave up: run that one instruction in the interpreter.

        KVM emulates what it intercepts (here, where the host intercepts #GP, an INT n
        whose gate is past the IDT limit) and what it cannot fetch from RAM (code in
        the legacy hole or above RAM, where the bus reads all-ones: FF FF is #UD).
        Its emulator handles only part of the ISA (no protected-mode INT n, no fetch
        from MMIO) and reports "emulation failure".  The interpreter implements the
        SDM for the same instruction on the same board, so the guest sees the
        hardware's answer (#GP -> #DF -> triple fault, an unmapped-fetch stop) under
        every engine.
        """
        from pyvmm.engines.interp.engine import InterpreterEngine

        board = self.board
        board.stats.count("exits", "emulated by the interpreter")
        state = self.get_state()
        hooks = (board.events.wake, board.cpu_access)
        board.clock.vcpu_stopped()
        interp = InterpreterEngine(board)  # takes the clock (MANUAL) and the hooks
        try:
            interp.set_state(state)
            stop = interp.step()
            if stop is None:
                self.set_state(interp.get_state())
        finally:
            interp.close()
            board.clock.set_source(self.clock_source)
            board.events.wake, board.cpu_access = hooks
            board.clock.vcpu_started()
        return stop

    def _describe_fail_entry(self, run: k.kvm_run) -> str:
        code = run.exit.fail_entry.hardware_entry_failure_reason
        if code == k.SVM_EXIT_INVALID:
            text = "VMRUN failed: invalid guest state (SVM VMEXIT_INVALID)"
        else:
            basic = code & 0xFFFF
            text = k.ENTRY_FAILURE_NAMES.get(basic, f"hardware entry failure reason {code:#x}")
        return f"VM entry failed: {text} at {self.where()}"

    def _describe_internal_error(self, run: k.kvm_run) -> str:
        internal = run.exit.internal
        label = k.INTERNAL_ERROR_NAMES.get(internal.suberror, f"suberror {internal.suberror}")
        data = " ".join(f"{internal.data[i]:#x}" for i in range(min(internal.ndata, 16)))
        text = f"KVM internal error: {label} at {self.where()}"
        return f"{text} [data {data}]" if data else text

    def _system_event(self, run: k.kvm_run) -> StopReason:
        kind = run.exit.system_event.type
        if kind == _SYSTEM_EVENT_RESET:
            return StopReason(StopKind.RESET, "KVM system event: reset")
        labels = {_SYSTEM_EVENT_SHUTDOWN: "shutdown", _SYSTEM_EVENT_CRASH: "crash"}
        return StopReason(StopKind.INTERNAL_ERROR,
                          f"KVM system event: {labels.get(kind, f'type {kind}')}")

    # -- teardown -------------------------------------------------------------
    def close(self) -> None:
        if self.halt_wait is not None:
            self.halt_wait.close()
            self.halt_wait = None
        self.kvm_run = None  # drop the ctypes view before unmapping
        if self.run_map is not None:
            try:
                self.run_map.close()
            except BufferError:
                pass  # an escaping exception's frames still hold the kvm_run view: the
                # mapping is unmapped with them, and that exception is what the caller sees
            self.run_map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
