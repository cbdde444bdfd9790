"""The host side of guest output: a reader that leaves or stalls (issue 12, finding 6).

`pyvmm run demo | head -1` is a normal stop with its own status (24, host
output closed), and a stdout nobody reads cannot hold pyvmm past --timeout,
under every engine, without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pyvmm.engines.registry import ENGINES, engine_availability
from pyvmm.machine.stop import StopKind
from tests.unit.kvm.kvm_guest import assemble

# A console flood: REP OUTSB of 16 MiB of RAM to COM1, forever.
FLOOD = """
bits 32
org 0x100000
MB_MAGIC equ 0x1BADB002
MB_FLAGS equ 0x00010002
mb_header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    dd mb_header, mb_header, 0, 0, start
start:
    mov esi, 0x100000
    mov ecx, 0x1000000
    mov dx, 0x3f8
    cld
    rep outsb
    jmp start
"""


def engines() -> list[str]:
    return list(ENGINES)


def pyvmm(*args: str, stdout: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.Popen([sys.executable, "-m", "pyvmm", "run", *args], stdout=stdout,
                            stderr=subprocess.PIPE, env=env)


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    path = tmp_path_factory.mktemp("flood") / "flood.bin"
    path.write_bytes(assemble(FLOOD))
    return path


def skip_unless(engine: str) -> None:
    ok, why = engine_availability(engine)
    if not ok:
        pytest.skip(why)


@pytest.mark.parametrize("engine", engines())
def test_reader_leaving_is_a_documented_stop(engine):
    skip_unless(engine)
    read_end, write_end = os.pipe()
    proc = pyvmm("--engine", engine, "demo", "--timeout", "120", stdout=write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = reader.readline()  # what `head -1` does: one line, then go away
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert first.startswith(b"demo:")
    assert proc.returncode == StopKind.OUTPUT_CLOSED.exit_code, err
    assert "Traceback" not in err and "BufferError" not in err
    assert err.strip().splitlines() == ["pyvmm: vm0 stopped: host output closed: "
                                        "the reader of stdout went away"]


@pytest.mark.parametrize("engine", engines())
def test_stdout_nobody_reads_does_not_outlive_the_timeout(engine, flood):
    """Without the deadline the writer blocks until the reader reads: forever here."""
    skip_unless(engine)
    read_end, write_end = os.pipe()
    started = time.monotonic()
    proc = pyvmm("--engine", engine, "--kernel", str(flood), "--timeout", "2", stdout=write_end)
    os.close(write_end)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(read_end)
    err = err.decode()
    assert proc.returncode == StopKind.TIMEOUT.exit_code, err
    assert "Traceback" not in err
    assert time.monotonic() - started < 60
