"""Many isolated VMs in one host process.

The hypervisor is the only thing that touches the host's resources on the
VMs' behalf:

- Each VM is a `VirtualMachine`: its own board (RAM on its own anonymous
  mmaps, buses, devices, i8259 PIC, `VirtualClock`, `HostEvents`, `Stats`)
  and its own engine.  Nothing mutable is shared between VMs.
- Time: ONE `HostTimerService` (pyvmm.machine.host_timer) arms one host wait
  for the earliest deadline over all host-clocked VMs and delivers each
  expiry to its VM (each VM keeps its own virtual timers).
- CPU: a VM whose guest runs in host time (`ClockSource.VCPU`/`HOST`: KVM) gets its
  own vCPU thread; KVM_RUN is a ctypes call, which releases the GIL, so those
  VMs really run in parallel.  VMs whose engine executes the guest in Python
  (`ClockSource.MANUAL`: the interpreter) hold the GIL while they run, so
  threads would buy nothing; they are time-sliced round-robin by one
  scheduler thread, each for `slice_seconds` of host time per turn (the
  engine's `run(timeout)` returns TIMEOUT and continues on the next call).
- Consoles: each VM's COM1 and debugcon go to its own file, or to stdout with
  every line prefixed by the VM's name, line-buffered per VM.  Each VM has a
  console output budget: once spent, its further output is dropped and the
  VM alone is stopped (so a guest flooding its UART cannot drown the others).

See docs/HYPERVISOR.md for the configuration file and the report.
"""

from __future__ import annotations

import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO, TextIO

from pyvmm import units
from pyvmm.board.pc import MIB
from pyvmm.board.virtio import VirtioSpec, virtio_specs
from pyvmm.boot.registry import IMAGE_OPTIONS
from pyvmm.engines.base import Engine
from pyvmm.engines.registry import DEFAULT_ENGINE, ENGINES, IRQCHIP_MODES
from pyvmm.errors import ConfigError, ImageError
from pyvmm.image_request import image_spec
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.host_timer import MAX_RUN_SECONDS, MAX_WAIT_SECONDS, HostTimerService
from pyvmm.machine.stop import StopKind, StopReason
from pyvmm.net.netdev import parse_netdev, parse_nic, parse_nic_text
from pyvmm.net.network import Network
from pyvmm.vm import ImageSpec, VirtualMachine

DEFAULT_SLICE_SECONDS = 0.02  # an interpreter VM's turn in the round-robin
DEFAULT_OUTPUT_LIMIT = 256 * 1024  # console bytes a VM may write before it is stopped
MAX_COUNT = 64  # copies of one [[vm]] entry: each is a whole PC (RAM, threads, fds)
OUTPUT_LIMIT_MESSAGE = "stopped by the hypervisor: console output limit of {} bytes reached"

# Stats keys the per-VM report reads.
TIMER_INTERRUPTS = ("timer", "interrupts delivered")
HOST_WAKEUPS = ("timer", "host wake-ups")


# -- consoles -------------------------------------------------------------------
class VmConsole:
    """One VM's console writer: an output budget, then a file or prefixed stdout.

    With `prefix`, output is line-buffered and each complete line is written
    as `prefix + line` under `lock` (shared by every VM writing to the same
    stream), so lines of different VMs never interleave.  Past `limit` bytes
    the output is dropped (counted in `dropped`) and `on_limit` is called once.
    """

    def __init__(self, out: BinaryIO, prefix: bytes | None = None,
                 lock: threading.Lock | None = None, limit: int | None = None,
                 owns: bool = False) -> None:
        self.out = out
        self.prefix = prefix
        self.lock = lock if lock is not None else threading.Lock()
        self.limit = limit
        self.owns = owns
        self.written = 0
        self.dropped = 0
        self.on_limit: Callable[[], None] | None = None
        self._line = bytearray()
        self._limit_hit = False

    def write(self, data: bytes) -> int:
        size = len(data)
        if self.limit is not None:
            room = self.limit - self.written
            if size > room:
                self.dropped += size - max(room, 0)
                data = data[:max(room, 0)]
                if not self._limit_hit:
                    self._limit_hit = True
                    if self.on_limit is not None:
                        self.on_limit()
        self.written += len(data)
        if not data:
            return size
        if self.prefix is None:
            with self.lock:
                self.out.write(data)
                if b"\n" in data:
                    self.out.flush()
            return size
        self._line += data
        if b"\n" in data:
            *lines, rest = bytes(self._line).split(b"\n")
            self._line = bytearray(rest)
            self._emit(b"".join(self.prefix + line + b"\n" for line in lines))
        return size

    def flush(self) -> None:
        """The UART flushes after every byte; lines are emitted whole instead."""

    def _emit(self, text: bytes) -> None:
        with self.lock:
            self.out.write(text)
            self.out.flush()

    def close(self) -> None:
        """Emit a partial last line (with a newline) and close an owned file."""
        if self.prefix is not None and self._line:
            self._emit(self.prefix + bytes(self._line) + b"\n")
            self._line.clear()
        with self.lock:
            self.out.flush()
            if self.owns:
                self.out.close()


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- configuration -----------------------------------------------------------
@dataclass
class VmConfig:
    """One guest to run: what, under which engine, with how much RAM, where its console goes."""

    name: str
    image: ImageSpec
    engine: str = DEFAULT_ENGINE
    ram_size: int = 64 * MIB
    console: str = "stdout"  # "stdout" | "file:PATH" | "none"
    timeout: float | None = None  # host seconds from the start of the run
    output_limit: int | None = DEFAULT_OUTPUT_LIMIT
    unmapped: str = "stop"  # physical accesses to nothing: "stop" the VM or "ignore"
    virtio: tuple[VirtioSpec, ...] = ()  # its NICs, on the hypervisor's switches
    irqchip: str | None = None  # kvm: "kernel" or "user", as --irqchip; None: the default


@dataclass
class VmResult:
    """One row of the hypervisor's report."""

    name: str
    engine: str
    guest: str
    reason: StopReason
    wall_seconds: float
    exits: int
    timer_interrupts: int
    host_wakeups: int
    console_bytes: int = 0
    console_dropped: int = 0

    @property
    def exit_status(self) -> int:
        return self.reason.exit_code


@dataclass
class HostedVm:
    """A VM under the hypervisor, with its console and run bookkeeping."""

    config: VmConfig
    vm_id: int
    vm: VirtualMachine
    console: VmConsole
    threaded: bool
    result: VmResult | None = None
    started: float = 0.0
    turns: int = 0  # scheduler slices run (time-sliced VMs only)
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def board(self):  # noqa: ANN201 - PcBoard
        return self.vm.board


def combined_exit_status(results: list[VmResult]) -> int:
    """The exit status of a multi-VM run: the status every VM shares, else the
    status of the first VM (in configuration order) that differs from VM 1's.
    No results at all is an internal error, never success."""
    if not results:
        return StopKind.INTERNAL_ERROR.exit_code
    first = results[0].exit_status
    for result in results[1:]:
        if result.exit_status != first:
            return result.exit_status
    return first


def format_report(results: list[VmResult]) -> str:
    """One row per VM: name, engine, guest, status, stop reason, wall time, exits,
    timer interrupts delivered, host-timer wake-ups."""
    header = ("vm", "engine", "guest", "status", "stop reason", "wall s", "exits",
              "timer irqs", "host wake-ups")
    rows = [header] + [
        (r.name, r.engine, r.guest, str(r.exit_status), r.reason.describe(),
         f"{r.wall_seconds:.3f}", str(r.exits), str(r.timer_interrupts), str(r.host_wakeups))
        for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {3, 5, 6, 7, 8}
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in numeric else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _internal_error(error: BaseException) -> StopReason:
    return StopReason(StopKind.INTERNAL_ERROR, f"{type(error).__name__}: {error}")


# -- the hypervisor ---------------------------------------------------------------
class Hypervisor:
    """Runs N isolated VMs in this process; see the module docstring."""

    def __init__(self, switch: object | None = None,
                 slice_seconds: float = DEFAULT_SLICE_SECONDS,
                 stdout: BinaryIO | None = None) -> None:
        if slice_seconds <= 0:
            raise ConfigError("the scheduler's time slice must be positive")
        self.switch = switch
        self.network = Network()  # the virtio NICs' switches, by name (pyvmm/net)
        self.slice_seconds = slice_seconds
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.stdout_lock = threading.Lock()
        self.host_timer = HostTimerService()
        self.vms: list[HostedVm] = []
        self._stopping: StopReason | None = None
        self._scheduler_wakeup = threading.Event()  # a time-sliced VM has a host event
        self._closed = False

    # -- building ---------------------------------------------------------------
    def _open_console(self, config: VmConfig) -> VmConsole:
        spec = config.console
        if spec == "stdout":
            return VmConsole(self.stdout, f"[{config.name}] ".encode(), self.stdout_lock,
                             config.output_limit)
        if spec == "none":
            return VmConsole(_Discard(), limit=config.output_limit)  # type: ignore[arg-type]
        if spec.startswith("file:") and len(spec) > 5:
            path = spec[5:]
            try:
                out = open(path, "wb")  # noqa: SIM115 - closed by VmConsole.close
            except OSError as error:
                raise ConfigError(f"VM {config.name}: console {spec}: cannot open {path}: "
                                  f"{error.strerror}") from None
            return VmConsole(out, limit=config.output_limit, owns=True)
        raise ConfigError(f"VM {config.name}: console {spec!r}: expected stdout, "
                          "file:PATH or none")

    def add(self, config: VmConfig) -> HostedVm:
        """Create a VM (board, engine, image loaded) with the next VM id (1, 2, ...)."""
        if any(h.name == config.name for h in self.vms):
            raise ConfigError(f"two VMs are named {config.name!r}")
        vm_id = len(self.vms) + 1
        console = self._open_console(config)
        try:
            vm = VirtualMachine(engine=config.engine, ram_size=config.ram_size,
                                serial_output=console,  # type: ignore[arg-type]
                                debugcon_output=console,  # type: ignore[arg-type]
                                name=config.name, vm_id=vm_id, switch=self.switch,
                                host_timer=self.host_timer, unmapped=config.unmapped,
                                virtio=config.virtio, network=self.network,
                                irqchip=config.irqchip)
        except BaseException:
            console.close()
            raise
        try:
            self._plug_switch(vm, vm_id)
            vm.load(config.image)
        except BaseException:
            vm.close()
            console.close()
            raise
        board = vm.board
        limit = config.output_limit
        console.on_limit = lambda: board.request_stop(
            StopReason(StopKind.OUTPUT_LIMIT, OUTPUT_LIMIT_MESSAGE.format(limit)))
        threaded = board.clock.source is not ClockSource.MANUAL  # host-timed: its own thread
        hosted = HostedVm(config, vm_id, vm, console, threaded)
        self.vms.append(hosted)
        return hosted

    def _plug_switch(self, vm: VirtualMachine, vm_id: int) -> None:
        """Give the VM's paravirtual device the switch (pyvmm.paravirt), if both exist."""
        if self.switch is None or getattr(vm.board, "hypercall", None) is None:
            return
        from pyvmm.paravirt import connect_board

        connect_board(vm.board, self.switch, vm_id)  # type: ignore[arg-type]

    # -- running ----------------------------------------------------------------
    def run(self) -> list[VmResult]:
        """Run every VM until each stops; returns one result per VM, in order."""
        start = time.monotonic()
        sliced = [h for h in self.vms if not h.threaded and h.result is None]
        threads = []
        for hosted in self.vms:
            if hosted.result is not None:
                continue
            hosted.started = start
            if hosted.threaded:
                hosted.thread = threading.Thread(target=self._run_threaded, args=(hosted,),
                                                 name=f"pyvmm-vcpu-{hosted.name}", daemon=True)
                threads.append(hosted.thread)
        if sliced:
            threads.append(threading.Thread(target=self._schedule, args=(sliced,),
                                            name="pyvmm-scheduler", daemon=True))
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)
        except KeyboardInterrupt:
            self.stop_all(StopReason(StopKind.USER_QUIT, "interrupted (Ctrl-C)"))
            for thread in threads:
                thread.join()
        # A thread that died without finishing its VM (a pyvmm bug) must still
        # leave a row: no VM silently drops out of the report.
        lost = StopReason(StopKind.INTERNAL_ERROR, "its thread ended without a result")
        for hosted in self.vms:
            if hosted.result is None:
                self._finish_safely(hosted, lost)
        return [h.result for h in self.vms if h.result is not None]

    def stop_all(self, reason: StopReason) -> None:
        """Thread-safe: stop every VM still running, with `reason`."""
        self._stopping = reason
        for hosted in self.vms:
            board = hosted.board
            board.events.post(lambda board=board: board.request_stop(reason))

    def _remaining(self, hosted: HostedVm) -> float | None:
        timeout = hosted.config.timeout
        if timeout is None:
            return None
        return hosted.started + timeout - time.monotonic()

    def _run_threaded(self, hosted: HostedVm) -> None:
        """A vCPU thread: the VM runs until it stops (KVM_RUN releases the GIL)."""
        try:
            reason = hosted.vm.run(hosted.config.timeout)  # counts its wall time
        except Exception as error:  # noqa: BLE001 - one VM's failure stays its own
            reason = _internal_error(error)
        self._finish_safely(hosted, reason)

    def _schedule(self, sliced: list[HostedVm]) -> None:
        """The scheduler thread: `_round_robin`, and if that fails (a pyvmm
        bug), every VM it had not finished gets an INTERNAL_ERROR row."""
        try:
            self._round_robin(sliced)
        except Exception as error:  # noqa: BLE001 - no VM may lose its result
            reason = _internal_error(error)
            for hosted in sliced:
                if hosted.result is None:
                    self._finish_safely(hosted, reason)

    def _round_robin(self, sliced: list[HostedVm]) -> None:
        """Round-robin: each live VM runs for one slice of host time per turn.

        A VM whose guest is idle (halted until a timer that lies ahead of host
        time) gives its slice back at once; when every VM is idle the scheduler
        sleeps until the earliest of their timers, or until one is woken.
        """
        live = list(sliced)
        for hosted in live:
            engine = hosted.vm.engine
            if hasattr(engine, "yield_when_idle"):
                engine.yield_when_idle = True
                hosted.board.events.wake = partial(self._wake_sliced, engine)
        while live:
            idle_until: list[float] = []
            all_idle = True
            for hosted in list(live):
                reason = self._turn(hosted)
                if reason is not None:
                    live.remove(hosted)
                    self._finish(hosted, reason)
                    continue
                until = getattr(hosted.vm.engine, "idle_until", None)
                if until is None:
                    all_idle = False  # someone is busy: no sleeping this round
                else:
                    idle_until.append(until)
            if live and all_idle and idle_until:
                # Bounded (MAX_WAIT_SECONDS): the next round re-checks.
                self._scheduler_wakeup.wait(
                    min(max(0.0, min(idle_until) - time.monotonic()), MAX_WAIT_SECONDS))
                self._scheduler_wakeup.clear()

    def _wake_sliced(self, engine: Engine) -> None:
        """A host event for a time-sliced VM: wake it and the scheduler."""
        engine.wake()
        self._scheduler_wakeup.set()

    def _turn(self, hosted: HostedVm) -> StopReason | None:
        """One slice of `hosted`; a StopReason when it has stopped for good."""
        if self._stopping is not None:
            return self._stopping
        remaining = self._remaining(hosted)
        if remaining is not None and remaining <= 0:
            return StopReason(StopKind.TIMEOUT, f"after {hosted.config.timeout} s")
        budget = self.slice_seconds if remaining is None else min(self.slice_seconds, remaining)
        hosted.turns += 1
        stats = hosted.vm.stats
        counted, began = stats.wall_seconds, time.monotonic()
        try:
            reason = hosted.vm.engine.run(budget)
        except Exception as error:  # noqa: BLE001 - one VM's failure stays its own
            return StopReason(StopKind.INTERNAL_ERROR, f"{type(error).__name__}: {error}")
        finally:
            if stats.wall_seconds == counted:  # the engine does not count its own time
                stats.wall_seconds += time.monotonic() - began
        settled = hosted.vm.after_stop(reason)
        if settled is None:
            return None  # a reset restarted the machine: its next slice runs the firmware
        reason = settled
        if reason.kind is StopKind.PAUSED and getattr(hosted.vm.engine, "idle_until", None):
            return None  # idle: the slice is given back early
        if reason.kind is StopKind.TIMEOUT:
            remaining = self._remaining(hosted)
            if remaining is None or remaining > 0:
                return None  # the slice is over, not the VM
            return StopReason(StopKind.TIMEOUT, f"after {hosted.config.timeout} s")
        return reason

    def _finish_safely(self, hosted: HostedVm, reason: StopReason) -> None:
        """`_finish`, or if even that fails, a bare row with `reason`."""
        try:
            self._finish(hosted, reason)
        except Exception:  # noqa: BLE001 - the row must exist whatever failed
            hosted.result = None
            self._finish_bare(hosted, reason)

    def _finish_bare(self, hosted: HostedVm, reason: StopReason) -> None:
        """A result row that touches nothing that could fail again."""
        hosted.result = VmResult(
            name=hosted.name, engine=hosted.config.engine,
            guest=hosted.config.image.label or str(hosted.config.image.path), reason=reason,
            wall_seconds=time.monotonic() - hosted.started, exits=0, timer_interrupts=0,
            host_wakeups=0)

    def _finish(self, hosted: HostedVm, reason: StopReason) -> None:
        wall = time.monotonic() - hosted.started
        vm = hosted.vm
        vm.stop_reason = reason
        stats = vm.stats
        hosted.console.close()
        hosted.result = VmResult(
            name=hosted.name, engine=hosted.config.engine,
            guest=hosted.config.image.label or str(hosted.config.image.path),
            reason=reason, wall_seconds=wall, exits=stats.total("exits"),
            timer_interrupts=stats.get(*TIMER_INTERRUPTS), host_wakeups=stats.get(*HOST_WAKEUPS),
            console_bytes=hosted.console.written, console_dropped=hosted.console.dropped)

    # -- teardown ---------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for hosted in self.vms:
            if hosted.thread is not None and hosted.thread.is_alive():
                continue  # still inside KVM_RUN: leave its fds to process exit
            hosted.vm.close()
            if hosted.result is None:
                hosted.console.close()
        self.host_timer.stop()

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- configuration files ------------------------------------------------------------
_VM_KEYS = {"name", "guest", "append", "initrd", "linux_entry", "engine", "irqchip",
            "memory", "console", "timeout",
            "output_limit", "count", "unmapped", "netdev", "device", "nic",
            *(option.key for option in IMAGE_OPTIONS)}
_HYPERVISOR_KEYS = {"timeout", "slice_ms", "output_limit", "engine", "irqchip", "memory",
                    "unmapped"}


def parse_size(value: object, what: str) -> int:
    """64M, 1G, 512K, or a bare integer number of bytes (TOML integer); never negative."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return units.parse_size(str(value), 1)
        if isinstance(value, str):
            return units.parse_size(value, 1)
    except ValueError:
        pass
    raise ConfigError(f"{what}: invalid size {value!r} (examples: 64M, 1G, 65536)")


def _number(value: object, what: str) -> float:
    """A positive, finite TOML number no larger than MAX_RUN_SECONDS (TOML
    allows inf and nan; no host wait or deadline can be armed for them)."""
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and units.valid_seconds(value):
        return float(value)
    raise ConfigError(f"{what}: expected a positive number up to {MAX_RUN_SECONDS:g}, "
                      f"not {value!r}")


def _image_of(entry: dict, base: Path, where: str) -> ImageSpec:
    """The same image keys, checks and kind detection as the command line's
    options (pyvmm/image_request.py); relative paths are the file's directory's."""
    def path_of(key: str) -> Path:
        path = Path(str(entry[key]))
        return path if path.is_absolute() else base / path

    files = {option.key: path_of(option.key) for option in IMAGE_OPTIONS if option.key in entry}
    try:
        spec = image_spec(files, str(entry["guest"]) if "guest" in entry else None,
                          str(entry["append"]) if "append" in entry else None,
                          path_of("initrd") if "initrd" in entry else None,
                          str(entry["linux_entry"]) if "linux_entry" in entry else None,
                          name=str, guest_name="guest")
    except (ConfigError, ImageError) as error:
        raise type(error)(f"{where}: {error}") from None
    if "guest" not in entry:
        spec.label = spec.path.name
    return spec


def _strings(entry: dict, key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a string or a list of strings")
    return value


def _nics_of(entry: dict, where: str) -> tuple[VirtioSpec, ...]:
    """netdev = [...], device = [...] (NICs), nic = [...]: the command line's strings."""
    try:
        specs = virtio_specs([], [parse_nic_text(t) for t in _strings(entry, "device", where)],
                             [parse_netdev(t) for t in _strings(entry, "netdev", where)],
                             [parse_nic(t) for t in _strings(entry, "nic", where)])
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if entry.get("count", 1) != 1 and any(s.options.get("netdev") == "tap" for s in specs):
        raise ConfigError(f"{where}: a TAP is one VM's: count must be 1")
    return specs


def configs_from_toml(text: str, base: Path = Path(".")) -> tuple[list[VmConfig], float]:
    """Parse a hypervisor file (docs/HYPERVISOR.md): the VMs and the time slice.

    Relative image and console paths are relative to `base` (the file's folder).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"invalid TOML: {error}") from None
    unknown = set(data) - {"hypervisor", "vm"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    defaults = data.get("hypervisor", {})
    if not isinstance(defaults, dict):
        raise ConfigError("hypervisor must be a [hypervisor] table")
    bad = set(defaults) - _HYPERVISOR_KEYS
    if bad:
        raise ConfigError(f"[hypervisor]: unknown key(s): {', '.join(sorted(bad))}")
    entries = data.get("vm", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError("no [[vm]] tables: nothing to run")
    if not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError("vm must be [[vm]] tables, not values")
    slice_seconds = _number(defaults.get("slice_ms", DEFAULT_SLICE_SECONDS * 1000),
                            "[hypervisor] slice_ms") / 1000
    configs: list[VmConfig] = []
    for index, entry in enumerate(entries, 1):
        where = f"[[vm]] #{index}"
        bad = set(entry) - _VM_KEYS
        if bad:
            raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(bad))}")
        image = _image_of(entry, base, where)
        nics = _nics_of(entry, where)
        name = str(entry.get("name", image.label or f"vm{index}"))
        engine = str(entry.get("engine", defaults.get("engine", DEFAULT_ENGINE)))
        if engine not in ENGINES:
            raise ConfigError(f"{where}: unknown engine {engine!r} "
                              f"(choose from {', '.join(ENGINES)})")
        memory = parse_size(entry.get("memory", defaults.get("memory", 64 * MIB)),
                            f"{where} memory")
        timeout = entry.get("timeout", defaults.get("timeout"))
        limit = entry.get("output_limit", defaults.get("output_limit", DEFAULT_OUTPUT_LIMIT))
        console = str(entry.get("console", "stdout"))
        unmapped = str(entry.get("unmapped", defaults.get("unmapped", "stop")))
        if unmapped not in ("stop", "ignore"):
            raise ConfigError(f"{where}: unmapped must be \"stop\" or \"ignore\"")
        irqchip = entry.get("irqchip")  # [hypervisor]'s applies to the kvm VMs
        if irqchip is None and engine == "kvm":
            irqchip = defaults.get("irqchip")
        if irqchip is not None and irqchip not in IRQCHIP_MODES:
            raise ConfigError(f"{where}: irqchip must be one of {', '.join(IRQCHIP_MODES)}")
        if irqchip is not None and engine != "kvm":
            raise ConfigError(f"{where}: irqchip is KVM's (--irqchip); the {engine} engine "
                              "has only the board's interrupt controllers")
        count = entry.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) \
                or not 1 <= count <= MAX_COUNT:
            raise ConfigError(f"{where}: count must be 1 to {MAX_COUNT}")
        for copy in range(1, count + 1):
            vm_name = name if count == 1 else f"{name}{copy}"
            vm_console = console.replace("{name}", vm_name)
            if vm_console.startswith("file:") and not Path(vm_console[5:]).is_absolute():
                vm_console = "file:" + str(base / vm_console[5:])
            configs.append(VmConfig(
                name=vm_name, image=image, engine=engine, ram_size=memory, console=vm_console,
                timeout=None if timeout is None else _number(timeout, f"{where} timeout"),
                output_limit=None if limit in (0, "none") else parse_size(
                    limit, f"{where} output_limit"),
                unmapped=unmapped, virtio=nics, irqchip=irqchip))
    files = [c.console for c in configs if c.console.startswith("file:")]
    if len(files) != len(set(files)):
        raise ConfigError("two VMs write their console to the same file (use {name} "
                          "in the path)")
    return configs, slice_seconds


def load_config(path: Path) -> tuple[list[VmConfig], float]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return configs_from_toml(text, path.parent)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


# -- the command line's entry point ---------------------------------------------------
def default_switch() -> object | None:
    """A virtual switch for the VMs' paravirtual NICs (pyvmm.paravirt), when present."""
    try:
        from pyvmm.paravirt.switch import VirtualSwitch
    except ImportError:
        return None
    return VirtualSwitch()


def run_and_report(configs: list[VmConfig], slice_seconds: float = DEFAULT_SLICE_SECONDS,
                   stats: bool = False, stdout: BinaryIO | None = None,
                   stderr: TextIO | None = None) -> int:
    """Run `configs` under one hypervisor, print the per-VM report on stderr and
    return the combined exit status (`combined_exit_status`)."""
    err = stderr if stderr is not None else sys.stderr
    with Hypervisor(switch=default_switch(), slice_seconds=slice_seconds,
                    stdout=stdout) as hypervisor:
        for config in configs:
            hypervisor.add(config)
        results = hypervisor.run()
        if stats:
            for hosted in hypervisor.vms:
                print(f"== {hosted.name} ==", file=err)
                print(hosted.vm.stats.format(), file=err)
        print(format_report(results), file=err)
        print(f"host timer: {hypervisor.host_timer.arms} waits armed, "
              f"{hypervisor.host_timer.wakeups} wake-ups for {len(results)} VMs", file=err)
    return combined_exit_status(results)
