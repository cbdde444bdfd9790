"""A multiboot kernel pyvmm did not build: freestanding C from the host's gcc and ld.

This is the shape of a user's test kernel (like kvm-unit-tests' x86 tests):
it reads the multiboot info, prints on the 0xE9 debug console and exits
through port 0xF4.  The expected numbers are computed here, not copied.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvmm.engines.registry import engine_availability
from tests.conftest import run_pyvmm
from tests.guests.c_build import build_c_kernel

SOURCE = Path(__file__).parent / "c_kernel"


# -O2 leaves frame pointers out; -O0 with frame pointers makes every function use
# `push ebp; mov ebp, esp ... leave` (32-bit LEAVE must pop 4 bytes).
OPT_FLAGS = {"O2": ["-O2"], "O0-frame-pointer": ["-O0", "-fno-omit-frame-pointer"]}


@pytest.fixture(scope="module", params=sorted(OPT_FLAGS))
def c_kernel(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"c_kernel_{request.param}")
    return build_c_kernel(SOURCE / "kernel.c", out, OPT_FLAGS[request.param])


@pytest.mark.parametrize("engine", ["kvm", "interp", "jit"])
def test_c_multiboot_kernel(c_kernel, engine):
    ok, reason = engine_availability(engine)
    if not ok:
        pytest.skip(reason)
    result = run_pyvmm("run", "--engine", engine, "-m", "32M", "--kernel", str(c_kernel),
                       "--append", "answer=42 quiet", "--serial", "none", timeout=120)
    mem_upper_kib = 32 * 1024 - 1024  # RAM above 1 MiB, in KiB (multiboot spec §3.3)
    expected_sum = sum(i * i for i in range(1, 1001))
    assert result.stdout.decode() == (
        "c-kernel: cmdline=answer=42 quiet\n"
        f"c-kernel: mem_upper={mem_upper_kib} sum={expected_sum}\n")
    assert result.returncode == (0x10 << 1) | 1, result.stderr
