"""The KVM engine: the host CPU runs the guest; every VM exit comes back here.

Devices and the interrupt controller stay in Python (no in-kernel irqchip),
so each port access, MMIO access and interrupt goes through this loop
(KVM API document, Documentation/virt/kvm/api.rst, "KVM_RUN" and
"struct kvm_run").
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from pyvmm.cpu.cpuid import CpuidEntry, kvm_cpuid_policy
from pyvmm.cpu.state import FLAG_IF, CpuState
from pyvmm.engines.base import Engine
from pyvmm.engines.kvm import complete, kick
from pyvmm.engines.kvm import ioctls as k
from pyvmm.engines.kvm import state as conv
from pyvmm.engines.kvm.registers import KvmCpuAccess
from pyvmm.errors import EngineUnavailable
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.hooks import HookKind
from pyvmm.machine.host_timer import HostTimerService, TimerChannel, wait_seconds_until
from pyvmm.machine.stop import StopKind, StopReason

if TYPE_CHECKING:
    from pyvmm.machine.board import Board

KVM_DEVICE = "/dev/kvm"
MAX_RUN_TIMEOUT = 1e9  # seconds; a longer run() timeout means no limit

# Where KVM may put the three-page TSS and the identity-mapped page table it
# needs for real-mode/unpaged guests on Intel (KVM API: KVM_SET_TSS_ADDR,
# KVM_SET_IDENTITY_MAP_ADDR).  Both must be guest-physical addresses no slot
# uses: just below the 16 MiB window under 4 GiB that BIOS ROMs occupy, and
# above the local APIC page (QEMU uses the same place).
IDENTITY_MAP_ADDR = 0xFEFFC000
TSS_ADDR = IDENTITY_MAP_ADDR + 0x1000

# kvm_run.system_event.type (KVM API, KVM_EXIT_SYSTEM_EVENT).
_SYSTEM_EVENT_SHUTDOWN = 1
_SYSTEM_EVENT_RESET = 2
_SYSTEM_EVENT_CRASH = 3

_EXIT_NAMES = k.EXIT_REASON_NAMES


def _open_kvm() -> int:
    return os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)


class KvmEngine(Engine):
    """Hardware-assisted virtualization through /dev/kvm, one vCPU."""

    name = "kvm"
    # Code and memory hooks would need single-stepping the vCPU: not served.
    hook_kinds = frozenset({HookKind.PORT, HookKind.MMIO, HookKind.INTERRUPT, HookKind.EXIT})
    # Guest time: VCPU (the time this VM's vCPU actually got, see
    # pyvmm/machine/clock.py) or HOST (wall-clock time, QEMU's behaviour).
    clock_source = ClockSource.VCPU

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not os.path.exists(KVM_DEVICE):
            return False, f"{KVM_DEVICE} does not exist (no KVM on this host)"
        try:
            fd = _open_kvm()
        except OSError as exc:
            return False, f"cannot open {KVM_DEVICE}: {exc.strerror}"
        try:
            version, err = k.ioctl_raw(fd, k.KVM_GET_API_VERSION)
            if version != k.KVM_API_VERSION:
                detail = os.strerror(err) if version < 0 else f"version {version}"
                return False, f"KVM API {detail}; pyvmm needs version {k.KVM_API_VERSION}"
            for cap, label in ((k.KVM_CAP_USER_MEMORY, "user memory"),
                               (k.KVM_CAP_IMMEDIATE_EXIT, "immediate_exit")):
                if k.ioctl_raw(fd, k.KVM_CHECK_EXTENSION, cap)[0] <= 0:
                    return False, f"KVM lacks the {label} capability"
        finally:
            os.close(fd)
        return True, ""

    # -- setup ----------------------------------------------------------------
    def __init__(self, board: Board) -> None:
        super().__init__(board)
        ok, reason = self.availability()
        if not ok:
            raise EngineUnavailable(reason)
        self._kvm_fd = -1
        self._vm_fd = -1
        self._vcpu_fd = -1
        self._run_map: mmap.mmap | None = None
        self._run: k.kvm_run | None = None
        self._waker: TimerChannel | None = None  # this VM's slot in the host timer
        self._own_timer: HostTimerService | None = None
        self._lock = threading.Lock()
        self._thread_id: int | None = None  # the vCPU thread while inside run()
        self._wakeup = threading.Event()
        self._pause_requested = False
        self._halted = False
        self._io_pending = False  # an IO/MMIO exit KVM completes on the next KVM_RUN
        self._pending_vector: int | None = None  # acknowledged but not yet accepted by KVM
        self._slots: dict[int, tuple[int, int, int, int]] = {}  # slot -> (gpa, size, hva, flags)
        self._layout_version = -1
        self._extra_msrs: set[int] = set()
        self._timeout: float | None = None  # this run()'s, for the TIMEOUT message
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        board = self.board
        self._kvm_fd = _open_kvm()
        self._vm_fd = k.ioctl(self._kvm_fd, k.KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        self._readonly_ok = self._check(k.KVM_CAP_READONLY_MEM)
        self._xsave_ok = self._check(k.KVM_CAP_XSAVE)
        if self._check(k.KVM_CAP_SET_IDENTITY_MAP_ADDR):
            k.ioctl(self._vm_fd, k.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(IDENTITY_MAP_ADDR),
                    "KVM_SET_IDENTITY_MAP_ADDR")
        if self._check(k.KVM_CAP_SET_TSS_ADDR):
            k.ioctl(self._vm_fd, k.KVM_SET_TSS_ADDR, TSS_ADDR, "KVM_SET_TSS_ADDR")
        self.sync_memory()
        self._vcpu_fd = k.ioctl(self._vm_fd, k.KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")
        size = k.ioctl(self._kvm_fd, k.KVM_GET_VCPU_MMAP_SIZE, None, "KVM_GET_VCPU_MMAP_SIZE")
        self._run_map = mmap.mmap(self._vcpu_fd, size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        self._run = k.kvm_run.from_buffer(self._run_map)
        self._set_cpuid()
        supported = set(self._msr_index_list())
        self._msr_indices = [m for m in conv.DEFAULT_MSRS if m in supported]

        board.clock.set_source(self.clock_source)
        board.clock.on_new_deadline = self._on_new_deadline
        board.events.wake = self.wake
        board.cpu_access = KvmCpuAccess(self)  # hypercall device: vCPU registers
        if board.stats.guest_seconds is None:
            board.stats.guest_seconds = 0.0
        kick.ensure_handler()
        service = board.host_timer
        if service is None:  # a hypervisor of one: the facility serves this VM alone
            service = self._own_timer = HostTimerService()
        self._waker = service.channel(self._kick, board.stats, f"vm{board.vm_id}")

    def _check(self, cap: int) -> bool:
        return k.ioctl_raw(self._kvm_fd, k.KVM_CHECK_EXTENSION, cap)[0] > 0

    def sync_memory(self) -> None:
        """Make KVM's slots match the board's memory regions: delete the slots of
        regions that are gone (KVM API: memory_size 0), add the new ones.

        ROM regions become KVM_MEM_READONLY slots: guest reads run at full
        speed, guest writes come back as MMIO exits (and are dropped).
        """
        self._layout_version = self.board.memory.layout_version
        wanted = {}
        for region in self.board.memory.regions:
            flags = k.KVM_MEM_READONLY if region.readonly and self._readonly_ok else 0
            wanted[(region.gpa, region.size, region.host_address, flags)] = region
        for slot, key in list(self._slots.items()):
            if key not in wanted:
                desc = k.kvm_userspace_memory_region(slot, 0, key[0], 0, 0)
                k.ioctl(self._vm_fd, k.KVM_SET_USER_MEMORY_REGION, desc,
                        f"KVM_SET_USER_MEMORY_REGION (delete slot {slot})")
                del self._slots[slot]
        mapped = set(self._slots.values())
        for key, region in wanted.items():
            if key in mapped:
                continue
            slot = next(i for i in range(len(self._slots) + 1) if i not in self._slots)
            gpa, size, hva, flags = key
            desc = k.kvm_userspace_memory_region(slot, flags, gpa, size, hva)
            k.ioctl(self._vm_fd, k.KVM_SET_USER_MEMORY_REGION, desc,
                    f"KVM_SET_USER_MEMORY_REGION ({region.name} at {gpa:#x})")
            self._slots[slot] = key

    def _supported_cpuid(self) -> list[CpuidEntry]:
        count = 128
        while True:
            buf = k.kvm_cpuid2_with(count)()
            buf.nent = count
            result, err = k.ioctl_raw(self._kvm_fd, k.KVM_GET_SUPPORTED_CPUID, buf)
            if result >= 0:
                return [CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                        for e in buf.entries[:buf.nent]]
            if err != errno.E2BIG or count >= 4096:
                raise k.KvmError("KVM_GET_SUPPORTED_CPUID", err)
            count *= 2

    def _set_cpuid(self) -> None:
        entries = kvm_cpuid_policy(self._supported_cpuid)
        buf = k.kvm_cpuid2_with(len(entries))()
        buf.nent = len(entries)
        for out, e in zip(buf.entries, entries, strict=True):
            out.function, out.index, out.flags = e.function, e.index, e.flags
            out.eax, out.ebx, out.ecx, out.edx = e.eax, e.ebx, e.ecx, e.edx
        k.ioctl(self._vcpu_fd, k.KVM_SET_CPUID2, buf, "KVM_SET_CPUID2")

    def _msr_index_list(self) -> list[int]:
        probe = k.kvm_msr_list()
        result, err = k.ioctl_raw(self._kvm_fd, k.KVM_GET_MSR_INDEX_LIST, probe)
        if result < 0 and err != errno.E2BIG:
            raise k.KvmError("KVM_GET_MSR_INDEX_LIST", err)
        full = k.kvm_msr_list_with(probe.nmsrs)()
        full.nmsrs = probe.nmsrs
        k.ioctl(self._kvm_fd, k.KVM_GET_MSR_INDEX_LIST, full, "KVM_GET_MSR_INDEX_LIST")
        return list(full.indices[:full.nmsrs])

    # -- state ----------------------------------------------------------------
    def _vcpu(self, request: int, struct: ctypes.Structure, what: str) -> None:
        k.ioctl(self._vcpu_fd, request, struct, what)

    def _complete_pending_io(self) -> None:
        """Let KVM finish an IO/MMIO exit without running the guest (KVM API:
        the state is only consistent after re-entering KVM_RUN; immediate_exit
        makes that re-entry return at once)."""
        if not self._io_pending:
            return
        assert self._run is not None
        self._run.immediate_exit = 1
        result, err = k.ioctl_raw(self._vcpu_fd, k.KVM_RUN)
        self._run.immediate_exit = 0
        self._io_pending = False
        if result < 0 and err != errno.EINTR:
            raise k.KvmError("KVM_RUN (completing I/O)", err)

    def set_state(self, state: CpuState) -> None:
        self._complete_pending_io()
        self._vcpu(k.KVM_SET_SREGS, conv.sregs_from_state(state), "KVM_SET_SREGS")
        self._vcpu(k.KVM_SET_REGS, conv.regs_from_state(state), "KVM_SET_REGS")
        values = {m: v for m, v in state.msrs.items() if m not in conv.FIELD_MSRS}
        self._extra_msrs = set(values) - set(self._msr_indices)
        if values:
            msrs = conv.msrs_struct(values)
            done = k.ioctl(self._vcpu_fd, k.KVM_SET_MSRS, msrs, "KVM_SET_MSRS")
            if done != msrs.nmsrs:
                bad = msrs.entries[done]
                raise k.KvmError(f"KVM_SET_MSRS of MSR {bad.index:#x} = {bad.data:#x}",
                                 errno.EINVAL)
        if state.fpu_image is not None:
            if self._xsave_ok:
                xsave = k.kvm_xsave()
                self._vcpu(k.KVM_GET_XSAVE, xsave, "KVM_GET_XSAVE")
                conv.fxsave_into_xsave(state.fpu_image, xsave)
                self._vcpu(k.KVM_SET_XSAVE, xsave, "KVM_SET_XSAVE")
            else:
                self._vcpu(k.KVM_SET_FPU, conv.fxsave_to_fpu(state.fpu_image), "KVM_SET_FPU")
        self._vcpu(k.KVM_SET_DEBUGREGS, conv.debugregs_from_state(state), "KVM_SET_DEBUGREGS")
        events = k.kvm_vcpu_events()
        self._vcpu(k.KVM_GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS")
        events.interrupt.shadow = k.KVM_X86_SHADOW_INT_STI if state.interrupt_shadow else 0
        # An acknowledged, undelivered interrupt is re-queued for injection at the
        # next entry (KVM API: KVM_SET_VCPU_EVENTS always applies `interrupt`).
        events.interrupt.injected = int(state.pending_interrupt is not None)
        events.interrupt.nr = state.pending_interrupt or 0
        events.interrupt.soft = 0
        events.flags = k.KVM_VCPUEVENT_VALID_SHADOW
        self._vcpu(k.KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS")
        self._halted = state.halted and state.pending_interrupt is None  # it wakes HLT
        self._pending_vector = None

    def get_state(self) -> CpuState:
        self._complete_pending_io()
        state = CpuState()
        regs = k.kvm_regs()
        self._vcpu(k.KVM_GET_REGS, regs, "KVM_GET_REGS")
        conv.regs_into_state(regs, state)
        sregs = k.kvm_sregs()
        self._vcpu(k.KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        conv.sregs_into_state(sregs, state)
        indices = sorted(set(self._msr_indices) | self._extra_msrs)
        msrs = conv.msrs_struct(dict.fromkeys(indices, 0))
        done = k.ioctl(self._vcpu_fd, k.KVM_GET_MSRS, msrs, "KVM_GET_MSRS")
        state.msrs = conv.msrs_values(msrs, done)
        if self._xsave_ok:
            xsave = k.kvm_xsave()
            self._vcpu(k.KVM_GET_XSAVE, xsave, "KVM_GET_XSAVE")
            state.fpu_image = conv.xsave_to_fxsave(xsave)
        else:
            fpu = k.kvm_fpu()
            self._vcpu(k.KVM_GET_FPU, fpu, "KVM_GET_FPU")
            state.fpu_image = conv.fpu_to_fxsave(fpu)
        debug = k.kvm_debugregs()
        self._vcpu(k.KVM_GET_DEBUGREGS, debug, "KVM_GET_DEBUGREGS")
        conv.debugregs_into_state(debug, state)
        events = k.kvm_vcpu_events()
        self._vcpu(k.KVM_GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS")
        state.interrupt_shadow = bool(events.interrupt.shadow)
        state.halted = self._halted
        # Queued in KVM (injected at the next entry) or still waiting here.
        state.pending_interrupt = (events.interrupt.nr if events.interrupt.injected
                                   else self._pending_vector)
        return state

    def _guest_if(self) -> bool:
        """RFLAGS.IF as the vCPU has it now (kvm_run.if_flag is only as fresh as the last exit)."""
        regs = k.kvm_regs()
        self._vcpu(k.KVM_GET_REGS, regs, "KVM_GET_REGS")
        return bool(regs.rflags & FLAG_IF)

    def _register_state(self) -> CpuState:
        """The general and segment registers only (KVM_GET_REGS + KVM_GET_SREGS)."""
        regs, sregs = k.kvm_regs(), k.kvm_sregs()
        self._vcpu(k.KVM_GET_REGS, regs, "KVM_GET_REGS")
        self._vcpu(k.KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        state = CpuState()
        conv.regs_into_state(regs, state)
        conv.sregs_into_state(sregs, state)
        return state

    def _where(self) -> str:
        """"rip 0x... in <mode> mode", for stop messages."""
        state = self._register_state()
        cs = state.segments["cs"]
        return f"cs:rip {cs.selector:#06x}:{state.rip:#x} in {state.mode_name()} mode"

    # -- kicking ----------------------------------------------------------------
    def _kick(self) -> None:
        """Thread-safe: make the vCPU thread leave KVM_RUN (or its HLT wait) soon."""
        self._wakeup.set()
        with self._lock:
            if self._thread_id is not None and self._run is not None:
                self._run.immediate_exit = 1
                signal.pthread_kill(self._thread_id, kick.KICK_SIGNAL)

    def wake(self) -> None:
        self._kick()

    def request_pause(self) -> None:
        self._pause_requested = True
        self._kick()

    def _on_new_deadline(self, deadline_ns: int) -> None:
        """VirtualClock hook: a timer earlier than all others was armed (any thread)."""
        if self._waker is not None:
            self._waker.offer(self._host_ns(deadline_ns))

    def _host_ns(self, guest_ns: int) -> int:
        """A clock deadline as a host monotonic time.

        Exact for the HOST source; for VCPU it assumes guest time keeps pace
        with host time from now on, so a vCPU the host scheduler delays is
        woken early, finds nothing due, and this is computed again."""
        return time.monotonic_ns() + (guest_ns - self.board.clock.now_ns())

    def _wake_target(self, run_deadline: int | None) -> int | None:
        clock_deadline = self.board.clock.next_deadline()
        target = run_deadline
        if clock_deadline is not None:
            host = self._host_ns(clock_deadline)
            target = host if target is None else min(target, host)
        return target

    # -- the run loop ---------------------------------------------------------
    def run(self, timeout: float | None = None) -> StopReason:
        assert self._run is not None and self._waker is not None
        self.sync_memory()
        if timeout is not None and not 0 <= timeout < MAX_RUN_TIMEOUT:
            timeout = None if timeout >= MAX_RUN_TIMEOUT else 0.0  # inf: no limit; NaN/<0: now
        run_deadline = None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
        self._timeout = timeout
        old_mask = kick.block_kick()
        unblocked = k.kvm_signal_mask_sigset(
            k.KERNEL_SIGSET_BYTES, kick.sigset_bits(old_mask - {kick.KICK_SIGNAL}))
        k.ioctl(self._vcpu_fd, k.KVM_SET_SIGNAL_MASK, unblocked, "KVM_SET_SIGNAL_MASK")
        with self._lock:
            self._thread_id = threading.get_ident()
        self.board.clock.vcpu_started()
        try:
            reason = self._loop(run_deadline)
            self._complete_pending_io()
            return reason
        finally:
            self.board.clock.vcpu_stopped()
            with self._lock:
                self._thread_id = None
            self._waker.set_target(None)
            self._run.immediate_exit = 0
            kick.consume_kicks()
            kick.restore_mask(old_mask)

    def _service(self, run_deadline: int | None) -> StopReason | None:
        """Between exits: host events, due timers, then the ways a run can end."""
        board = self.board
        board.events.drain()
        board.clock.run_due()
        if board.memory.layout_version != self._layout_version:
            self.sync_memory()
        if board.stop_request is not None:
            reason, board.stop_request = board.stop_request, None
            return reason
        if self._pause_requested:
            self._pause_requested = False
            return StopReason(StopKind.PAUSED)
        if run_deadline is not None and time.monotonic_ns() >= run_deadline:
            self._complete_pending_io()  # so the location is the next instruction's
            return StopReason(StopKind.TIMEOUT, f"after {self._timeout} s at {self._where()}")
        return None

    def _loop(self, run_deadline: int | None) -> StopReason:
        run = self._run
        assert run is not None and self._waker is not None
        stats = self.board.stats
        pic = self.board.interrupt_controller
        while True:
            self._wakeup.clear()
            reason = self._service(run_deadline)
            if reason is not None:
                return reason
            target = self._wake_target(run_deadline)
            if self._halted:
                if not self._guest_if():
                    return StopReason(StopKind.HALTED, self._where())
                if pic.interrupt_pending() or self._pending_vector is not None:
                    self._halted = False
                else:
                    if self.board.events.pending():
                        continue
                    self._waker.set_target(target)
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
            self._waker.set_target(target)
            start = time.perf_counter()
            result, err = k.ioctl_raw(self._vcpu_fd, k.KVM_RUN)
            stats.guest_seconds = (stats.guest_seconds or 0.0) + time.perf_counter() - start
            run.immediate_exit = 0
            self._io_pending = False
            if result < 0:
                if err == errno.EINTR:
                    stats.count("exits", "intr")
                    if self.hooks is not None and self.hooks.by_kind[HookKind.EXIT]:
                        self.hooks.exit("intr")
                    kick.consume_kicks()
                    continue
                if err == errno.EAGAIN:
                    continue
                return StopReason(StopKind.INTERNAL_ERROR,
                                  f"KVM_RUN failed: {os.strerror(err)} (errno {err})")
            reason = self._handle_exit(run)
            if reason is not None:
                return reason

    def _inject(self, run: k.kvm_run) -> None:
        """Hand the PIC's interrupt to KVM when the guest can take it, else ask
        for an exit when it can (KVM API: KVM_INTERRUPT, request_interrupt_window)."""
        pic = self.board.interrupt_controller
        if self._pending_vector is None and not pic.interrupt_pending():
            run.request_interrupt_window = 0
            return
        if not (run.ready_for_interrupt_injection and run.if_flag):
            run.request_interrupt_window = 1
            return
        vector = self._pending_vector if self._pending_vector is not None else pic.acknowledge()
        result, err = k.ioctl_raw(self._vcpu_fd, k.KVM_INTERRUPT, k.kvm_interrupt(vector))
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

    def _handle_exit(self, run: k.kvm_run) -> StopReason | None:
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
            self._halted = True
            if not run.if_flag:
                # Nothing but NMI/SMI/INIT wakes HLT with IF=0 (SDM Vol. 2A, HLT);
                # this PC has none of those, so the guest is stopped for good.
                return StopReason(StopKind.HALTED, self._where())
        elif reason in (k.KVM_EXIT_IRQ_WINDOW_OPEN, k.KVM_EXIT_INTR):
            pass
        elif reason == k.KVM_EXIT_SHUTDOWN:
            return StopReason(StopKind.TRIPLE_FAULT, f"shutdown at {self._where()}")
        elif reason == k.KVM_EXIT_FAIL_ENTRY:
            return StopReason(StopKind.INTERNAL_ERROR, self._describe_fail_entry(run))
        elif reason == k.KVM_EXIT_INTERNAL_ERROR:
            if run.exit.internal.suberror == k.KVM_INTERNAL_ERROR_EMULATION:
                if self._complete_failed_instruction(run):
                    return None
                return self._emulate_one()
            return StopReason(StopKind.INTERNAL_ERROR, self._describe_internal_error(run))
        elif reason == k.KVM_EXIT_SYSTEM_EVENT:
            return self._system_event(run)
        else:
            return StopReason(StopKind.INTERNAL_ERROR,
                              f"unhandled KVM exit reason {reason} ({name}) at {self._where()}")
        return None

    def _handle_io(self, run: k.kvm_run) -> None:
        """Port I/O, including string I/O: `count` items of `size` bytes at
        run + data_offset (KVM API, KVM_EXIT_IO)."""
        assert self._run_map is not None
        io = run.exit.io
        size, port, count = io.size, io.port, io.count
        start = io.data_offset
        ports = self.board.ports
        self._io_pending = True
        if io.direction == k.KVM_EXIT_IO_OUT:
            data = self._run_map[start:start + size * count]
            for i in range(count):
                ports.write(port, size, int.from_bytes(data[i * size:(i + 1) * size], "little"))
        else:
            data = b"".join(ports.read(port, size).to_bytes(size, "little")
                            for _ in range(count))
            self._run_map[start:start + size * count] = data

    def _handle_mmio(self, run: k.kvm_run) -> None:
        mmio = run.exit.mmio
        address, length = mmio.phys_addr, mmio.len
        self._io_pending = True
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

    def _complete_failed_instruction(self, run: k.kvm_run) -> bool:
        """A ring-0 instruction KVM's emulator refused, completed here (kvm/complete.py)."""
        state = self._register_state()
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
        return f"VM entry failed: {text} at {self._where()}"

    def _describe_internal_error(self, run: k.kvm_run) -> str:
        internal = run.exit.internal
        label = k.INTERNAL_ERROR_NAMES.get(internal.suberror, f"suberror {internal.suberror}")
        data = " ".join(f"{internal.data[i]:#x}" for i in range(min(internal.ndata, 16)))
        text = f"KVM internal error: {label} at {self._where()}"
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
        if self._waker is not None:
            self._waker.stop()
            self._waker = None
        if self._own_timer is not None:
            self._own_timer.stop()
            self._own_timer = None
        board = self.board
        if getattr(board.clock, "on_new_deadline", None) == self._on_new_deadline:
            board.clock.on_new_deadline = None
        if getattr(board.events, "wake", None) == self.wake:
            board.events.wake = None
        if isinstance(getattr(board, "cpu_access", None), KvmCpuAccess):
            board.cpu_access = None
        self._run = None  # drop the ctypes view before unmapping
        if self._run_map is not None:
            try:
                self._run_map.close()
            except BufferError:
                pass  # an escaping exception's frames still hold the kvm_run view: the
                # mapping is unmapped with them, and that exception is what the caller sees
            self._run_map = None
        for attr in ("_vcpu_fd", "_vm_fd", "_kvm_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
