"""--wrap: blocks whose address arithmetic wraps at the address size, against the CPU.

SDM Vol. 1 §3.7.5: an effective address is computed modulo the address size, so
[ebx + ecx*8 - 0x10] with ECX = 2^32 - 2 lands 0x20 bytes below EBX, and in 16-bit
addressing [bx + si + disp16] wraps at 64 KiB.  The generator makes these happen on
purpose (generator.WRAP_CHANCE); the interpreter and the JIT must agree with the CPU.
"""

from __future__ import annotations

import pytest
from iced_x86 import OpKind, RegisterExt

from pyvmm.difftest.generator import generate_case
from pyvmm.difftest.runner import load_engine, make_engine_side, run_cases

SEED = 20261207


def _wrapping_operands(mode: int, count: int) -> int:
    """Blocks with a memory operand whose index register starts at 2^32 - k."""
    found = 0
    for index in range(count):
        case = generate_case(mode, SEED, index, 8, None, False, True)
        high = {r for r in case.pointer_regs
                if (1 << 31) <= case.gprs[RegisterExt.number(RegisterExt.full_register(r))]
                < (1 << 32)}
        for ins in case.body:
            if any(ins.op_kind(i) == OpKind.MEMORY for i in range(ins.op_count)) and \
                    RegisterExt.full_register(ins.memory_index) in high:
                found += 1
                break
    return found


@pytest.mark.parametrize("mode", [32, 64])
def test_the_generator_makes_32_bit_addresses_wrap(mode: int) -> None:
    assert _wrapping_operands(mode, 100) >= 20


@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("mode", [64, 32, 16])
def test_wrapping_addresses_agree_with_the_cpu(native_runner, mode: int, engine: str) -> None:
    ok, reason = native_runner.supports(mode)
    if not ok:
        pytest.skip(reason)
    side = make_engine_side(load_engine(engine))
    summary = run_cases(native_runner, side, mode, SEED, range(60), length=8, guard=True,
                        wrap=True)
    reports = "\n\n".join(d.report() for d in summary.disagreements[:10])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.total == 60
