"""The GDB stub driven by real gdb (Debian's gdb) in batch mode.

The debuggee is a C kernel built here with -g: gdb breaks at a symbol,
continues, steps, reads a variable, sets a watchpoint and sees it fire,
then detaches and the guest runs to its own exit.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.engines.registry import engine_availability
from tests.conftest import ROOT
from tests.guests.c_build import build_c_kernel

SOURCE = Path(__file__).parent / "gdb_kernel"
ENGINES = ["interp", "jit", "kvm"]


@pytest.fixture(scope="module")
def debuggee(tmp_path_factory) -> Path:
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed (Debian package gdb)")
    return build_c_kernel(SOURCE / "debuggee.c", tmp_path_factory.mktemp("gdb_kernel"),
                          ["-g", "-O0"])


class Stub:
    """`pyvmm run --gdb tcp::0 -S` in the background; `port` read from its stderr."""

    def __init__(self, engine: str, kernel: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pyvmm", "run", "--engine", engine, "--kernel", str(kernel),
             "--serial", "none", "--gdb", "tcp::0", "-S", "--timeout", "120"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        line = self.process.stderr.readline().decode()
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        assert match, line
        self.port = int(match.group(1))

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=120)
        return self.process.returncode, out.decode(), err.decode()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def run_gdb(kernel: Path, port: int, *commands: str) -> str:
    args = ["gdb", "-q", "-batch", "-nx", str(kernel), "-ex", f"target remote :{port}"]
    for command in commands:
        args += ["-ex", command]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    return done.stdout + done.stderr


def debug_session(engine: str, kernel: Path, *commands: str) -> tuple[str, int, str, str]:
    """gdb's output, then the stub's exit status, stdout and stderr (skips where
    `engine` cannot run here)."""
    ok, reason = engine_availability(engine)
    if not ok:
        pytest.skip(reason)
    stub = Stub(engine, kernel)
    try:
        output = run_gdb(kernel, stub.port, *commands)
        return (output, *stub.finish())
    finally:
        stub.kill()


@pytest.mark.parametrize("engine", ENGINES)
def test_break_step_watch_detach(debuggee, engine):
    output, status, stdout, stderr = debug_session(
        engine, debuggee,
        "break bump", "continue", "print by", "print counter",
        "continue", "print by", "print counter",
        "step", "step", "print counter",
        "delete", "watch counter", "continue",
        "delete", "info registers eip", "detach")
    assert "Breakpoint 1, bump (by=1)" in output, output
    assert "Breakpoint 1, bump (by=2)" in output, output
    # First stop: nothing added yet; second: 1 added; after stepping through
    # `counter += by` it is 1 + 2.
    values = re.findall(r"^\$\d+ = (\d+)$", output, re.MULTILINE)
    assert values == ["1", "0", "2", "1", "3"], output
    # The watchpoint fires when bump(3) stores 3 + 3.
    assert re.search(r"Hardware watchpoint 2: counter\s+Old value = 3\s+New value = 6", output), \
        output
    assert "[Inferior 1 (Remote target) detached]" in output, output
    # Detached, the guest ran on to its own end: 1 + 2 + 3 + 4 + 5, exit 0x10.
    assert stdout == "15\n"
    assert status == (0x10 << 1) | 1, stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_read_and_access_watchpoints(debuggee, engine):
    output, status, stdout, _ = debug_session(
        engine, debuggee,
        "awatch counter", "continue", "continue", "delete",
        "rwatch counter", "continue", "delete", "detach")
    if engine == "kvm":  # no data breakpoints under kvm on this host (target.py)
        assert output.count("does not support this type of hardware watchpoint") + \
            output.count("Could not insert") >= 1, output
        assert stdout == "15\n" and status == (0x10 << 1) | 1
        return
    # bump(1) reads counter (0), then writes 1: an access watchpoint stops at both.
    assert re.search(r"Hardware access \(read/write\) watchpoint 1: counter\s+Value = 0",
                     output), output
    assert re.search(r"Hardware access \(read/write\) watchpoint 1: counter\s+"
                     r"Old value = 0\s+New value = 1", output), output
    # The next read of counter is bump(2)'s, with counter = 1.
    assert re.search(r"Hardware read watchpoint 2: counter\s+Value = 1", output), output
    assert "[Inferior 1 (Remote target) detached]" in output, output
    assert stdout == "15\n" and status == (0x10 << 1) | 1
