"""A virtual machine: one board, one engine, one guest image, and its stats.

This is the level the CLI, `pyvmm compare` and the hypervisor work at:
build a VM from an `ImageSpec`, run it, read why it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pyvmm.board.pc import MIB, PcBoard
from pyvmm.board.virtio import VirtioSpec, with_default_macs
from pyvmm.boot.registry import BootInputs
from pyvmm.boot.registry import loader as loader_of
from pyvmm.cpu.state import CpuState
from pyvmm.engines.base import Engine
from pyvmm.engines.registry import (  # noqa: F401  (re-exported)
    DEFAULT_ENGINE,
    ENGINES,
    engine_availability,
    engine_class,
)
from pyvmm.errors import ConfigError, EngineUnavailable, ImageError
from pyvmm.files import read_user_file
from pyvmm.machine.hooks import ADDRESS_MAX, HookKind, HookSet
from pyvmm.machine.host_timer import HostTimerService
from pyvmm.machine.replay import InputLog, InputRecorder, InputReplayer
from pyvmm.machine.reset import cpu_reset_state, reset_refusal
from pyvmm.machine.stop import StopKind, StopReason
from pyvmm.net.network import Network

# Largest image file we read at all (a BIOS may be 16 MiB; kernels are smaller).
MAX_IMAGE_BYTES = 256 * MIB


@dataclass
class ImageSpec:
    """What to boot: one of the loader kinds, from a file or a bundled guest."""

    kind: str  # a row of pyvmm.boot.registry.LOADERS
    path: Path
    cmdline: str = ""
    label: str = ""
    initrd: Path | None = None  # for kinds whose loader takes one (linux)
    linux_entry: str = "64"  # linux only: one of boot.linux.LINUX_ENTRIES
    firmware: Path | None = None  # linux, --linux-entry real: the BIOS (--bios)
    _data: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def bundled(cls, name: str, cmdline: str = "") -> ImageSpec:
        from pyvmm.guests import BUILT_GUESTS, BUNDLED_GUESTS, guest_path

        if name in BUILT_GUESTS:
            from pyvmm.guests import linux_build

            built = linux_build.build()
            return cls("linux", built.kernel, cmdline or linux_build.DEFAULT_CMDLINE,
                       label=name, initrd=built.initramfs)
        if name not in BUNDLED_GUESTS:
            raise ConfigError(f"unknown guest {name!r}: bundled guests are "
                              f"{', '.join(sorted([*BUNDLED_GUESTS, *BUILT_GUESTS]))}; for a "
                              "file use --kernel, --boot-sector or --bios")
        guest = BUNDLED_GUESTS[name]
        return cls(guest.kind, guest_path(name), cmdline, label=name)

    def read(self) -> bytes:
        """The image's bytes (read once): a one-line ImageError if unusable.

        Only regular files are accepted, and never more than MAX_IMAGE_BYTES
        are read, so /dev/zero or a FIFO cannot make pyvmm eat host memory.
        """
        if self._data is not None:
            return self._data
        data = read_user_file(self.path, MAX_IMAGE_BYTES, ImageError)
        self._data = data
        return data


def _boot_inputs(spec: ImageSpec) -> BootInputs:
    initrd = None
    if loader_of(spec.kind).initrd and spec.initrd is not None:
        initrd = read_user_file(spec.initrd, MAX_IMAGE_BYTES, ImageError)
    return BootInputs(spec.cmdline, initrd, spec.linux_entry, spec.firmware)


def load_image(board: PcBoard, spec: ImageSpec) -> CpuState:
    """Put the image into the board's memory; return the CPU's entry state."""
    row = loader_of(spec.kind)
    data = spec.read()
    try:
        return row.load(board, data, _boot_inputs(spec))
    except ImageError as error:
        raise ImageError(f"{spec.path}: {error}") from None


def republish_image(board: PcBoard, spec: ImageSpec) -> None:
    """On a board restored from a snapshot of a VM that boots its kernel through
    firmware (--linux-entry real): the fw_cfg items the firmware loads it from
    at a reset, read from the image's files again (the loader table's `republish`)."""
    row = loader_of(spec.kind)
    if row.republish is None or spec.linux_entry not in row.firmware_entries:
        return
    try:
        row.republish(board, spec.read(), _boot_inputs(spec))
    except ImageError as error:
        raise ImageError(f"{spec.path}: {error}") from None


class VirtualMachine:
    """One isolated VM: its own board (memory, devices, clock) and engine."""

    def __init__(self, engine: str = DEFAULT_ENGINE, ram_size: int = 64 * MIB,
                 serial_output: BinaryIO | None = None,
                 debugcon_output: BinaryIO | None = None, name: str = "vm0",
                 vm_id: int = 0, switch: object | None = None,
                 host_timer: HostTimerService | None = None,
                 unmapped: str = "stop", virtio: tuple[VirtioSpec, ...] = (),
                 irqchip: str | None = None, no_reboot: bool = False,
                 reboot_timeout: int | None = None, ioeventfd: bool = True,
                 network: Network | None = None, kvm_pit: bool = False) -> None:
        self.name = name
        cls = engine_class(engine)
        available, reason = cls.availability()
        if not available:
            raise EngineUnavailable(f"engine {engine!r} is not available: {reason}")
        self.board = PcBoard(ram_size=ram_size, serial_output=serial_output,
                             debugcon_output=debugcon_output, unmapped=unmapped,
                             virtio=with_default_macs(virtio, vm_id),
                             reboot_timeout=reboot_timeout)
        # Before the engine exists: it may register with the host timer.
        self.board.vm_id = vm_id
        self.board.switch = switch
        self.board.host_timer = host_timer
        self.engine_name = engine
        if irqchip not in (None, "user") and engine != "kvm":
            raise ConfigError(f"--irqchip {irqchip} is KVM's (the in-kernel interrupt "
                              f"controllers); the {engine} engine has only the board's")
        if kvm_pit and engine != "kvm":
            raise ConfigError(f"--kvm-pit is KVM's (KVM_CREATE_PIT2); the {engine} engine "
                              "has only the board's PIT")
        if not ioeventfd and engine != "kvm":
            raise ConfigError(f"--no-ioeventfd is KVM's (KVM_IOEVENTFD); the {engine} engine "
                              "serves every notification where the guest makes it")
        self.ioeventfd = ioeventfd  # kvm only: False is --no-ioeventfd
        # irqchip None: the engine's default (kvm: KvmEngine's).
        chip = {} if irqchip is None else {"irqchip": irqchip}
        self.engine: Engine = cls(self.board, ioeventfd=ioeventfd, kvm_pit=kvm_pit, **chip) \
            if engine == "kvm" else cls(self.board)
        self.stop_reason: StopReason | None = None
        # Kept for snapshots (pyvmm/snapshot.py): what a restored VM is built with.
        self.image: ImageSpec | None = None
        self.serial_output = serial_output
        self.debugcon_output = debugcon_output
        self.unmapped = unmapped
        # --no-reboot (QEMU's): a reset stops the VM instead of restarting it.
        self.no_reboot = no_reboot
        # Instrumentation (docs/HOOKS.md): ports and MMIO through the buses, the
        # rest through the engine.
        self.hooks = HookSet(self)
        self.board.ports.attach_hooks(self.hooks)
        self.board.mmio.attach_hooks(self.hooks)
        self.engine.set_hooks(self.hooks)
        # The NICs' backends (pyvmm/net): the hypervisor's network, else this VM's own.
        self.network = network if network is not None else Network()
        self._nics: list[tuple[str, object]] = []  # (hop name, VirtioNet)
        try:
            self._plug_nics()
        except BaseException:
            self.close()
            raise

    @property
    def stats(self):
        """The board's counters, with each NIC's backend hop (switch port or TAP:
        counted on other threads, published here) under "net"."""
        stats = self.board.stats
        for hop, device in self._nics:
            backend = device.backend  # type: ignore[attr-defined]
            rows = getattr(backend, "counter_rows", None)
            if rows is not None:
                for key, value in rows().items():
                    stats.counters["net"][f"{hop}: {key}"] = value
        return stats

    def _plug_nics(self) -> None:
        for index, spec in enumerate(self.board.virtio_specs):
            if spec.kind != "net":
                continue
            device = self.board.devices[f"virtio{index}"].device  # type: ignore[attr-defined]
            hop, backend = self.network.open(spec.options, f"{self.name}.virtio{index}")
            device.attach(backend, self.board.events.post)
            self._nics.append((f"virtio{index} {hop}", device))

    def _unplug_nics(self) -> None:
        for _, device in self._nics:
            device.detach()  # type: ignore[attr-defined]
        self._nics.clear()

    def load(self, spec: ImageSpec) -> None:
        state = load_image(self.board, spec)
        self.engine.set_state(state)
        self.image = spec

    def run(self, timeout: float | None = None) -> StopReason:
        """Run until the VM stops; a reset the firmware survives restarts it within
        the same `timeout` (see `after_stop`)."""
        start = time.monotonic()
        reason: StopReason | None = None
        remaining = timeout
        while reason is None:
            if remaining is not None and remaining <= 0:
                reason = StopReason(StopKind.TIMEOUT, f"after {timeout} s")
                break
            try:
                reason = self.after_stop(self.engine.run(remaining))
            except KeyboardInterrupt:
                reason = StopReason(StopKind.USER_QUIT, "interrupted (Ctrl-C)")
            if reason is None and timeout is not None:  # restarted: what is left of it
                remaining = timeout - (time.monotonic() - start)
            elif reason is not None and reason.kind is StopKind.TIMEOUT \
                    and remaining != timeout:
                reason = StopReason(StopKind.TIMEOUT, f"after {timeout} s")
        self.board.stats.wall_seconds += time.monotonic() - start
        self.stop_reason = reason
        return reason

    def after_stop(self, reason: StopReason) -> StopReason | None:
        """What a stop the engine returned means for the VM: None when it was a
        reset the machine restarts from (the caller runs the engine again), else
        the reason the VM stopped (the rules: pyvmm/machine/reset.py)."""
        if reason.kind is not StopKind.RESET:
            return reason
        firmware = self.image is not None and \
            loader_of(self.image.kind).boots_firmware(self.image.linux_entry)
        refusal = reset_refusal(firmware=firmware, no_reboot=self.no_reboot,
                                image=self.image.kind if self.image else None)
        if refusal is not None:
            return StopReason(StopKind.RESET, f"{reason.message}; {refusal}")
        hard = self.board.reset_hard
        state = self.engine.get_state()
        if hard:
            self.board.reset()
            # The chips an engine runs itself (KVM's, --irqchip kernel) take the
            # board models' power-on state too.
            self.engine.load_devices(self.board.get_state())
        else:
            self.board.init_cpu()
        self.engine.set_state(cpu_reset_state(state, hard))
        return None

    # -- hooks (Unicorn-style; docs/HOOKS.md) ---------------------------------
    # -- record/replay (docs/DEBUGGING.md) -------------------------------------
    def _input_log_engine(self, option: str):  # noqa: ANN202 - an InterpreterEngine
        if not hasattr(self.engine, "input_log"):
            raise ConfigError(f"{option} needs an engine that counts guest instructions "
                              f"(interp or jit), not {self.engine_name!r}: under kvm the host "
                              "CPU decides when each exit happens")
        if self.engine.input_log is not None:
            raise ConfigError("this VM already records or replays its inputs")
        return self.engine

    def record_inputs(self, path: Path) -> None:
        """Log every outside input from now on, with its instruction count, to `path`."""
        from pyvmm.engines.interp.replay import InputLogDriver

        engine = self._input_log_engine("--record")
        recorder = InputRecorder(path, self.engine_name, self.board.cmos.wall_time_ns())
        engine.input_log = InputLogDriver(engine, recorder=recorder)

    def replay_inputs(self, path: Path) -> InputLog:
        """Feed the inputs of a recording at their counts from now on; live input is dropped."""
        from pyvmm.engines.interp.replay import InputLogDriver

        engine = self._input_log_engine("--replay")
        log = InputLog(path)
        self.board.cmos.set_wall_time_ns(log.wall_time_ns)
        engine.input_log = InputLogDriver(engine, replayer=InputReplayer(log))
        return log

    def finish_input_log(self, reason: StopReason) -> str | None:
        """End recording or replaying; one line on what was recorded or replayed."""
        driver = getattr(self.engine, "input_log", None)
        if driver is None:
            return None
        driver.detach()
        self.engine.input_log = None
        count = driver.count()
        if driver.recorder is not None:
            driver.recorder.finish(count, reason.kind.name)
            return (f"recorded {driver.recorder.events} inputs over {count} instructions "
                    f"to {driver.recorder.path}")
        replayer = driver.replayer
        ignored = (f"; {replayer.live_inputs_ignored} live inputs ignored"
                   if replayer.live_inputs_ignored else "")
        return (f"replayed {len(replayer.log.events) - replayer.remaining} of "
                f"{len(replayer.log.events)} inputs over {count} instructions{ignored}")

    def _hook(self, kind: HookKind, callback: Callable[..., object], begin: int = 0,
              end: int = ADDRESS_MAX) -> int:
        if kind not in self.engine.hook_kinds and kind not in (HookKind.PORT, HookKind.MMIO):
            served = sorted(k.value for k in self.engine.hook_kinds | {HookKind.PORT,
                                                                         HookKind.MMIO})
            hint = "--irqchip user, or " if kind in type(self.engine).hook_kinds else ""
            raise ConfigError(f"the {self.engine_name} engine cannot serve {kind.value} "
                              f"hooks (it serves: {', '.join(served)}); use {hint}--engine "
                              "interp or jit")
        return self.hooks.add(kind, callback, begin, end)

    def hook_code(self, callback: Callable[..., object], begin: int = 0,
                  end: int = ADDRESS_MAX) -> int:
        """callback(vm, address, size) before each instruction at linear begin..end."""
        return self._hook(HookKind.CODE, callback, begin, end)

    def hook_block(self, callback: Callable[..., object], begin: int = 0,
                   end: int = ADDRESS_MAX) -> int:
        """callback(vm, address, size) when a basic block starts at linear begin..end."""
        return self._hook(HookKind.BLOCK, callback, begin, end)

    def hook_mem_read(self, callback: Callable[..., object], begin: int = 0,
                      end: int = ADDRESS_MAX) -> int:
        """callback(vm, address, size, value) after each data read touching begin..end."""
        return self._hook(HookKind.MEM_READ, callback, begin, end)

    def hook_mem_write(self, callback: Callable[..., object], begin: int = 0,
                       end: int = ADDRESS_MAX) -> int:
        """callback(vm, address, size, value) before each data write touching begin..end;
        returning False drops the write (memory keeps its bytes)."""
        return self._hook(HookKind.MEM_WRITE, callback, begin, end)

    def hook_port(self, callback: Callable[..., object], ports: Iterable[int]) -> list[int]:
        """callback(vm, port, size, value, is_write) for each access to `ports`."""
        return self.hooks.add_ports(callback, ports)

    def hook_mmio(self, callback: Callable[..., object], begin: int = 0,
                  end: int = ADDRESS_MAX) -> int:
        """callback(vm, address, size, value, is_write) for MMIO at physical begin..end."""
        return self._hook(HookKind.MMIO, callback, begin, end)

    def hook_interrupt(self, callback: Callable[..., object]) -> int:
        """callback(vm, vector, error_code) before an interrupt or exception is delivered."""
        return self._hook(HookKind.INTERRUPT, callback)

    def hook_exit(self, callback: Callable[..., object]) -> int:
        """callback(vm, reason) for each KVM exit (kvm engine only)."""
        return self._hook(HookKind.EXIT, callback)

    def remove_hook(self, handle: int | list[int]) -> None:
        for one in handle if isinstance(handle, list) else [handle]:
            self.hooks.remove(one)

    def close(self) -> None:
        self.stats  # noqa: B018 - the NICs' last counters, before their backends go
        self._unplug_nics()
        self.engine.close()
        self.board.close()
