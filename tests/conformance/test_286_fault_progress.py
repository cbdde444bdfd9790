"""80286 real mode: what a word access at offset 0FFFFH (interrupt 13) leaves behind.

Three cases recorded on a real 80286 (SingleStepTests 80286 real-mode vectors beyond
the slice in ../shared, reported in issue 11).  The 80286 raises interrupt 13 for a word
operand at offset 0FFFFH (iAPX 286 Programmer's Reference, real address mode exceptions)
and does not roll back what its microcode has already done:

- `pop word [si]`, SI=0FFFFH: SP stays incremented;
- `repne movsw`, DI=0FFFFH, DF=1, CX=5: CX=3 (the store faults after the next element's
  count step);
- `repne cmpsw` from the same state: CX=5 (the compares count after reading).

The runner's machinery (tests.conformance.x86_vectors) runs each as a vector would run:
from the initial registers to the HLT at the interrupt-13 handler.
"""

from __future__ import annotations

import pytest

from tests.conformance import x86_vectors as xv

HANDLER_CS = 0x1000  # IVT entry 13 -> 1000:0000, a HLT there
CODE_CS, CODE_IP = 0x2000, 0x0100
SS, SP = 0x5000, 0x0100
DF = 0x400


def _run(code: list[int], **regs: int) -> dict[str, int]:
    initial = {"ax": 0, "bx": 0, "cx": 0, "dx": 0, "cs": CODE_CS, "ss": SS, "ds": 0x3000,
               "es": 0x4000, "sp": SP, "bp": 0, "si": 0x0200, "di": 0x0300, "ip": CODE_IP,
               "flags": 0x0002}
    initial.update(regs)
    code_at = (CODE_CS << 4) + CODE_IP
    ram = [[13 * 4, 0], [13 * 4 + 1, 0], [13 * 4 + 2, HANDLER_CS & 0xFF],
           [13 * 4 + 3, HANDLER_CS >> 8], [HANDLER_CS << 4, 0xF4]]
    ram += [[code_at + i, byte] for i, byte in enumerate([*code, 0xF4])]
    test = {"name": "", "bytes": [*code, 0xF4], "initial": {"regs": initial, "ram": ram},
            "final": {"regs": {}, "ram": []}}
    runner = xv.Runner("80286")
    runner.run(test)
    cpu = runner.engine.cpu
    out = {name: cpu.regs[index] & 0xFFFF for name, index in xv.GPR_INDEX.items()}
    out["cs"], out["ip"] = cpu.seg_sel[1], cpu.rip & 0xFFFF
    frame = (SS << 4) + out["sp"]
    out["pushed_ip"] = cpu.ram[frame] | cpu.ram[frame + 1] << 8
    return out


def _took_interrupt_13(out: dict[str, int]) -> None:
    assert (out["cs"], out["ip"]) == (HANDLER_CS, 1)  # one past the handler's HLT
    assert out["pushed_ip"] == CODE_IP  # the faulting instruction, prefixes included


def test_pop_to_offset_ffff_keeps_sp_incremented() -> None:
    out = _run([0x8F, 0x04], si=0xFFFF)  # pop word [si]
    _took_interrupt_13(out)
    assert out["sp"] == SP + 2 - 6  # popped, then FLAGS, CS, IP pushed


@pytest.mark.parametrize(("code", "cx"), [([0xF2, 0xA5], 3), ([0xF2, 0xA7], 5)],
                         ids=["repne movsw", "repne cmpsw"])
def test_rep_string_store_or_compare_at_offset_ffff(code: list[int], cx: int) -> None:
    out = _run(code, di=0xFFFF, cx=5, flags=0x0002 | DF)
    _took_interrupt_13(out)
    assert out["cx"] == cx
