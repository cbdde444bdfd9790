"""The bundled guests under `--engine jit` behave exactly as under `--engine interp`.

The interpreter is the JIT's oracle: same serial output byte for byte, same
exit status, and the same number of guest instructions (the JIT runs a block
only when it fits in the interpreter's batch budget, so timer interrupts land
on the same instruction).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_pyvmm

GUEST_SUCCESS = 33  # the guest wrote 0x10 to port 0xF4: (0x10 << 1) | 1
INSTRUCTIONS = re.compile(rb"^instructions: (\d+)$", re.M)
BLOCKS = re.compile(rb"^  block executions +(\d+)$", re.M)


@pytest.mark.parametrize("guest, append", [("hello", None), ("demo", "work=3"),
                                           ("bench-int", "n=2000")])
def test_jit_matches_interp(guest: str, append: str | None) -> None:
    extra = ["--append", append] if append else []
    if guest.startswith("bench-"):
        extra += ["--kernel", f"pyvmm/guests/{guest}.elf"]
    else:
        extra.append(guest)
    interp = run_pyvmm("run", "--engine", "interp", "--stats", *extra, timeout=300)
    jit = run_pyvmm("run", "--engine", "jit", "--stats", *extra, timeout=300)
    assert interp.returncode == GUEST_SUCCESS, interp.stderr
    assert jit.returncode == interp.returncode, jit.stderr
    assert jit.stdout == interp.stdout
    assert jit.stdout  # the guest printed something
    interp_count = INSTRUCTIONS.search(interp.stderr)
    jit_count = INSTRUCTIONS.search(jit.stderr)
    assert interp_count and jit_count, jit.stderr
    assert int(jit_count.group(1)) == int(interp_count.group(1))
    blocks = BLOCKS.search(jit.stderr)
    assert blocks and int(blocks.group(1)) > 0, jit.stderr  # translated code really ran
