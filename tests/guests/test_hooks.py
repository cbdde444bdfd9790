"""Instrumentation hooks (pyvmm/machine/hooks.py) on the demo guest, under every engine
that serves them, and the examples/ scripts that use them."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from pyvmm.errors import ConfigError
from pyvmm.vm import ImageSpec, VirtualMachine
from tests.conftest import ROOT, kvm_skip_reason

EMULATORS = ["interp", "jit"]
ALL_ENGINES = ["interp", "jit", pytest.param("kvm", marks=pytest.mark.skipif(
    kvm_skip_reason() is not None, reason=str(kvm_skip_reason())))]
COM1 = 0x3F8


def _demo(engine: str, work: int = 2, **options: str) -> tuple[VirtualMachine, io.BytesIO]:
    serial = io.BytesIO()
    vm = VirtualMachine(engine=engine, serial_output=serial, **options)
    vm.load(ImageSpec.bundled("demo", f"work={work}"))
    return vm, serial


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_port_hook_sees_every_byte_the_guest_sent_to_com1(engine: str) -> None:
    vm, serial = _demo(engine)
    sent = bytearray()

    def on_port(vm: VirtualMachine, port: int, size: int, value: int, is_write: bool) -> None:
        # COM1's THR is offset 0 with DLAB clear; the demo sets DLAB only during setup.
        if is_write and not vm.board.uart.s.lcr & 0x80:
            sent.append(value)

    vm.hook_port(on_port, [COM1])
    reason = vm.run(timeout=120)
    vm.close()
    assert reason.exit_code == 33, reason.describe()
    assert b"task A: done checksum=" in serial.getvalue()
    assert bytes(sent) == serial.getvalue()


@pytest.mark.parametrize("engine", EMULATORS)
def test_code_hook_over_everything_counts_every_instruction(engine: str) -> None:
    vm, _ = _demo(engine)
    seen: list[int] = []
    vm.hook_code(lambda vm, address, size: seen.append(address))
    reason = vm.run(timeout=300)
    vm.close()
    assert reason.exit_code == 33
    # Every instruction that started ran through the hook once (the debug-exit OUT,
    # the last one, included).
    assert len(seen) == vm.stats.instructions


def test_code_hooks_see_the_same_instructions_under_interp_and_jit() -> None:
    traces = {}
    for engine in EMULATORS:
        vm, serial = _demo(engine)
        trace: list[tuple[int, int]] = []
        # The user tasks' code only (a range): the rest of the guest runs unhooked.
        vm.hook_code(lambda vm, address, size, trace=trace: trace.append((address, size)),
                     begin=0x102000, end=0x102FFF)
        vm.run(timeout=300)
        vm.close()
        traces[engine] = (trace, serial.getvalue())
    assert traces["interp"][0], "the range covers the demo's user code"
    assert traces["interp"] == traces["jit"]
    assert all(0x102000 <= a <= 0x102FFF and 1 <= s <= 15 for a, s in traces["interp"][0])


@pytest.mark.parametrize("engine", EMULATORS)
def test_a_vetoed_write_leaves_memory_unchanged(engine: str) -> None:
    # First run: where task A builds its output line (the buffer write() is given).
    vm, _ = _demo(engine)
    buffers: list[int] = []

    def on_interrupt(vm: VirtualMachine, vector: int, error_code: int | None) -> None:
        if vector == 0x80 and vm.engine.get_state().rax & 0xFFFFFFFF == 0:
            buffers.append(vm.engine.get_state().rdi)

    vm.hook_interrupt(on_interrupt)
    vm.run(timeout=120)
    vm.close()
    assert len(buffers) == 4  # started/done for each of the two tasks
    buffer_a = buffers[0]
    # Second run: drop every write into that buffer; the line goes out as zeros.
    vm, serial = _demo(engine)
    vetoed = []

    def veto(vm: VirtualMachine, address: int, size: int, value: int) -> bool:
        vetoed.append(address)
        return False

    vm.hook_mem_write(veto, buffer_a, buffer_a + 63)
    reason = vm.run(timeout=120)
    vm.close()
    assert reason.exit_code == 33
    assert vetoed
    out = serial.getvalue()
    assert b"task A" not in out and b"task B: started" in out
    assert b"\0" * 17 in out


@pytest.mark.parametrize("engine", EMULATORS)
def test_memory_read_hook_reports_the_value_read(engine: str) -> None:
    vm, _ = _demo(engine)
    reads: list[tuple[int, int, int]] = []
    vm.hook_mem_read(lambda vm, a, s, v: reads.append((a, s, v)))
    vm.run(timeout=300)
    vm.close()
    # The demo's tasks load their xorshift seeds (guests/demo/user.asm task_seeds).
    assert any(s == 8 and v == 0x0123456789ABCDEF for _, s, v in reads)
    assert any(s == 8 and v == 0xFEDCBA9876543210 for _, s, v in reads)


@pytest.mark.parametrize("engine", EMULATORS)
def test_removed_hooks_stop_firing_and_the_fast_path_returns(engine: str) -> None:
    vm, serial = _demo(engine, work=4)
    calls = []
    handle = vm.hook_mem_read(lambda vm, a, s, v: calls.append(a))
    code = vm.hook_code(lambda vm, a, s: calls.append(a))
    vm.engine.max_instructions = 2000
    vm.run(timeout=60)
    assert calls
    vm.remove_hook(handle)
    vm.remove_hook(code)
    assert vm.engine.cpu.mem_hooks is None and vm.engine.decoder.wrap is None
    before = len(calls)
    vm.engine.max_instructions = None
    reason = vm.run(timeout=300)
    vm.close()
    assert reason.exit_code == 33 and len(calls) == before
    with pytest.raises(KeyError):
        vm.remove_hook(handle)


@pytest.mark.parametrize("engine", EMULATORS)
def test_interrupt_hook_sees_system_calls_and_timer_interrupts(engine: str) -> None:
    vm, _ = _demo(engine)
    vectors: list[int] = []
    vm.hook_interrupt(lambda vm, vector, code: vectors.append(vector))
    vm.run(timeout=120)
    vm.close()
    assert vectors.count(0x80) == 10  # per task: 2 writes, 2 wait_ticks, 1 exit
    assert 0x20 in vectors  # the PIT's IRQ0 through the PIC (the demo's vector base)
    assert 14 in vectors  # the demand-zero page fault


@pytest.mark.skipif(kvm_skip_reason() is not None, reason=str(kvm_skip_reason()))
def test_kvm_serves_exit_and_interrupt_hooks_and_refuses_code_hooks() -> None:
    vm, _ = _demo("kvm", irqchip="user")
    exits: list[str] = []
    injected: list[int] = []
    vm.hook_exit(lambda vm, reason: exits.append(reason))
    vm.hook_interrupt(lambda vm, vector, code: injected.append(vector))
    with pytest.raises(ConfigError, match="cannot serve code hooks"):
        vm.hook_code(lambda vm, a, s: None)
    with pytest.raises(ConfigError, match="cannot serve mem_write hooks"):
        vm.hook_mem_write(lambda vm, a, s, v: None)
    reason = vm.run(timeout=120)
    vm.close()
    assert reason.exit_code == 33
    assert len(exits) == sum(vm.stats.counters["exits"].values())
    assert "io" in exits
    assert injected and set(injected) <= {0x20, 0x21, 0x24}


@pytest.mark.skipif(kvm_skip_reason() is not None, reason=str(kvm_skip_reason()))
def test_kvm_s_in_kernel_irqchip_refuses_interrupt_hooks_and_serves_exit_hooks() -> None:
    """--irqchip kernel (the default): KVM's chips deliver every interrupt, so there
    is none to report; the exits still come back."""
    vm, _ = _demo("kvm")
    exits: list[str] = []
    vm.hook_exit(lambda vm, reason: exits.append(reason))
    with pytest.raises(ConfigError, match="cannot serve interrupt hooks.*--irqchip user"):
        vm.hook_interrupt(lambda vm, vector, code: None)
    reason = vm.run(timeout=120)
    vm.close()
    assert reason.exit_code == 33
    assert len(exits) == sum(vm.stats.counters["exits"].values()) and "io" in exits


def _example(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_example_trace_syscalls() -> None:
    out = _example("examples/trace_syscalls.py", "--work", "1")
    assert "write(buf=" in out and "'task A: started\\r\\n'" in out
    assert "exit(result=" in out
    assert "system calls; stopped: debug-exit with status 33" in out


def test_example_coverage_writes_a_table_and_a_png(tmp_path) -> None:  # noqa: ANN001
    png = tmp_path / "coverage.png"
    out = _example("examples/coverage.py", "--engine", "jit", "--png", str(png))
    assert " blocks, " in out and "executions" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_example_mmio_log() -> None:
    out = _example("examples/mmio_log.py", "--limit", "3")
    assert "port 0x3f" in out and "(com1)" in out
    assert any(line.startswith("port com1") and "write" in line for line in out.splitlines())
