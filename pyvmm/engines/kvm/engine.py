"""The KVM engine: the host CPU runs the guest; every VM exit comes back to Python.

`KvmEngine` ties one `KvmVm` (vm.py: the fds and memory slots) and its
`KvmVcpu` (vcpu.py: registers, the KVM_RUN loop, exit dispatch) to a board,
and connects them to the board's clock, host events and the host timer
service.  With `--irqchip user` devices and the interrupt controllers stay in
Python, so each port access, MMIO access and interrupt is a VM exit; with
`--irqchip kernel` (irqchip.py, the default) KVM's PIC, I/O APIC and LAPIC
replace the board's (its PIT too with `--kvm-pit`), and their state moves in
and out of snapshots through `save_devices` and `load_devices`.  The board's
PIT then counts on the board's clock, as under `--irqchip user`: the vCPU is
kicked out of KVM_RUN at its next deadline and the time its HLT waited in KVM
passes for the guest (stats.py), so timer-driven output is the interpreter's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyvmm.cpu.state import MSR_IA32_APIC_BASE, CpuState
from pyvmm.devices.lapic import MSR_IA32_TSC_DEADLINE
from pyvmm.engines.base import Engine
from pyvmm.engines.kvm import ioctls as k
from pyvmm.engines.kvm import irqchip, kick
from pyvmm.engines.kvm import vm as kvm_vm
from pyvmm.engines.kvm.ioeventfd import VirtioOffload
from pyvmm.engines.kvm.registers import KvmCpuAccess
from pyvmm.engines.kvm.stats import HaltWait
from pyvmm.engines.kvm.tsc import TscDeadlineMsr
from pyvmm.engines.kvm.vcpu import KvmVcpu, host_ns
from pyvmm.engines.kvm.vm import KvmVm
from pyvmm.engines.registry import IRQCHIP_MODES
from pyvmm.errors import ConfigError, EngineUnavailable
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.hooks import HookKind
from pyvmm.machine.host_timer import HostTimerService, TimerChannel
from pyvmm.machine.stop import StopReason

if TYPE_CHECKING:
    from pyvmm.machine.board import Board
    from pyvmm.machine.hooks import HookSet


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
        return kvm_vm.availability()

    def __init__(self, board: Board, irqchip: str = IRQCHIP_MODES[0], ioeventfd: bool = True,
                 kvm_pit: bool = False) -> None:
        super().__init__(board)
        if irqchip not in IRQCHIP_MODES:
            raise ConfigError(f"--irqchip {irqchip!r}: expected user or kernel")
        if kvm_pit and irqchip != "kernel":
            raise ConfigError("--kvm-pit is KVM's in-kernel PIT: it needs --irqchip kernel")
        self.irqchip = irqchip
        self.kvm_pit = kvm_pit  # --kvm-pit: KVM's PIT (host time) instead of the board's
        if irqchip == "kernel":  # KVM's chips deliver every interrupt: none pass here
            self.hook_kinds = self.hook_kinds - {HookKind.INTERRUPT}
        self.ioeventfd = ioeventfd  # False: --no-ioeventfd, every notification an exit
        self._offload: VirtioOffload | None = None  # virtio's I/O threads (ioeventfd.py)
        ok, reason = self.availability()
        if not ok:
            raise EngineUnavailable(reason)
        self.vm: KvmVm | None = None
        self.vcpu: KvmVcpu | None = None
        self._wiring = None  # the board's wiring, while it ends in KVM's irqchip
        self._chips: irqchip.KernelChips | None = None  # KVM's chips, --irqchip kernel
        self._waker: TimerChannel | None = None  # this VM's slot in the host timer
        self._own_timer: HostTimerService | None = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        board = self.board
        self.vm = KvmVm()
        self.vm.sync_memory(board.memory)
        wiring = getattr(board, "wiring", None)
        if self.irqchip == "kernel":
            if wiring is None:
                raise ConfigError("--irqchip kernel needs a board with interrupt wiring")
            if not self.vm.check(k.KVM_CAP_IRQCHIP):
                raise EngineUnavailable("this KVM has no in-kernel irqchip (KVM_CAP_IRQCHIP): "
                                        "run with --irqchip user")
            pic_sink, ioapic_sink = irqchip.create(self.vm.fd, wiring, self.kvm_pit)
            self.vm.disable_halt_polling()
            tsc_deadline = self.vm.check(k.KVM_CAP_TSC_DEADLINE_TIMER)
        else:
            # The board's local APIC owns IA32_APIC_BASE (relocation, global enable) and
            # IA32_TSC_DEADLINE: guest accesses come back as MSR exits where this KVM can
            # filter them.  Its TSC is the board's 1 GHz virtual TSC (kvm/tsc.py).
            lapics = getattr(board, "lapics", None)
            tsc_deadline = bool(lapics) and self.vm.filter_msrs(
                [MSR_IA32_APIC_BASE, MSR_IA32_TSC_DEADLINE])
        self.vcpu = vcpu = KvmVcpu(self.vm, board, 0, self.clock_source,
                                   tsc_deadline=tsc_deadline)
        if self.irqchip == "kernel":
            vcpu.kernel_irqchip = True
            vcpu.halt_wait = HaltWait.open(vcpu.fd)
            if vcpu.halt_wait is None and not self.kvm_pit:
                raise EngineUnavailable(
                    "this KVM does not report the vCPU's halt_wait_ns (KVM_GET_STATS_FD), "
                    "which the board's PIT under --irqchip kernel needs: run with "
                    "--irqchip user or --kvm-pit")
            wiring.retarget(pic_sink, ioapic_sink)  # the board's lines now end in KVM
            self._wiring = wiring
            if hasattr(board, "msi_target") and self.vm.check(k.KVM_CAP_SIGNAL_MSI):
                board.msi_target = irqchip.KvmMsi(self.vm.fd)  # MSIs to KVM's LAPICs
            self._chips = irqchip.KernelChips(self.vm.fd, vcpu.fd, board.clock.now_ns,
                                              vcpu.guest_tsc, vcpu.tsc_khz(), self.kvm_pit)
        elif tsc_deadline:
            lapics[0].read_tsc = board.clock.now_ns
            vcpu.msr_devices = {
                MSR_IA32_APIC_BASE: lapics[0],
                MSR_IA32_TSC_DEADLINE: TscDeadlineMsr(lapics[0], vcpu.guest_tsc,
                                                      vcpu.tsc_khz()),
            }
        board.clock.set_source(self.clock_source)
        board.clock.on_new_deadline = self._on_new_deadline
        board.events.wake = self.wake
        board.cpu_access = KvmCpuAccess(vcpu)  # hypercall device: vCPU registers
        if board.stats.guest_seconds is None:
            board.stats.guest_seconds = 0.0
        kick.ensure_handler()
        service = board.host_timer
        if service is None:  # a hypervisor of one: the facility serves this VM alone
            service = self._own_timer = HostTimerService()
        self._waker = vcpu.waker = service.channel(vcpu.kick, board.stats, f"vm{board.vm_id}")
        self._offload = VirtioOffload(
            self.vm.fd, board, ioeventfd=self.ioeventfd and self.vm.check(k.KVM_CAP_IOEVENTFD),
            msi_direct=isinstance(getattr(board, "msi_target", None), irqchip.KvmMsi))

    def _on_new_deadline(self, deadline_ns: int) -> None:
        """VirtualClock hook: a timer earlier than all others was armed (any thread)."""
        if self._waker is not None:
            self._waker.offer(host_ns(self.board.clock, deadline_ns))

    def _live_vcpu(self) -> KvmVcpu:
        assert self.vcpu is not None, "the KVM engine is closed"
        return self.vcpu

    # -- the Engine contract ------------------------------------------------------
    def set_hooks(self, hooks: HookSet) -> None:
        super().set_hooks(hooks)
        self._live_vcpu().hooks = hooks

    def set_state(self, state: CpuState) -> None:
        self._live_vcpu().set_state(state)

    def get_state(self) -> CpuState:
        return self._live_vcpu().get_state()

    def run(self, timeout: float | None = None) -> StopReason:
        try:
            return self._live_vcpu().run(timeout)
        finally:
            if self._offload is not None:  # a stopped VM has no device work in flight
                self._offload.quiesce()

    def save_devices(self, board_state: dict) -> None:
        if self._chips is not None:
            self._live_vcpu().complete_pending_io()
            self._chips.save(board_state)

    def load_devices(self, board_state: dict) -> None:
        """KVM's chips take the state; the board's models of them stay idle (their
        timers, armed by the board's set_state, would drive IRQ0 a second time)."""
        if self._chips is None:
            return
        self._chips.load(board_state)
        for lapic in getattr(self.board, "lapics", ()):
            lapic.stop_timer()
        pit = getattr(self.board, "pit", None)
        if pit is not None and self.kvm_pit:
            pit.stop_timers()

    def set_guest_debug(self, single_step: bool, breakpoints: Sequence[int] = ()) -> None:
        """For the GDB stub: single-step, and/or up to four breakpoint addresses."""
        self._live_vcpu().set_guest_debug(single_step, breakpoints)

    def wake(self) -> None:
        if self.vcpu is not None:
            self.vcpu.kick()

    def request_pause(self) -> None:
        if self.vcpu is not None:
            self.vcpu.request_pause()

    # -- teardown -------------------------------------------------------------
    def close(self) -> None:
        if self._offload is not None:
            self._offload.close()
            self._offload = None
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
        self._chips = None
        if isinstance(getattr(board, "msi_target", None), irqchip.KvmMsi):
            board.msi_target = board.apic_bus.deliver_msi
        if self._wiring is not None:  # the board's own controllers take the lines back
            board_pic, board_ioapic = board.pic, board.ioapic
            self._wiring.retarget(board_pic, board_ioapic)
            self._wiring = None
        if self.vcpu is not None:
            self.vcpu.close()
            self.vcpu = None
        if self.vm is not None:
            self.vm.close()
            self.vm = None
