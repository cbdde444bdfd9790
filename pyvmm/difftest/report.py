"""Human-readable reports of disagreements."""

from __future__ import annotations

from iced_x86 import Formatter, FormatterSyntax

from pyvmm.cpu.state import GPR_NAMES
from pyvmm.difftest.compare import Difference, flags_text
from pyvmm.difftest.encode import EncodedCase
from pyvmm.difftest.flags import COMPARED_FLAGS


def disassembly(enc: EncodedCase) -> list[str]:
    formatter = Formatter(FormatterSyntax.INTEL)
    lines = []
    for instr in enc.decoded:
        start = instr.ip - enc.code_ip
        raw = enc.engine_code[start:start + instr.len].hex()
        lines.append(f"  {instr.ip:08x}  {raw:<24} {formatter.format(instr)}")
    lines.append(f"  {enc.trailer_ip:08x}  (end: HLT / jump to the native exit stub)")
    return lines


def initial_state_lines(enc: EncodedCase) -> list[str]:
    case = enc.case
    count = 16 if case.mode == 64 else 8
    width = 16 if case.mode == 64 else 8
    regs = [f"{GPR_NAMES[i]}={case.gprs[i]:0{width}x}" for i in range(count)]
    lines = ["  " + "  ".join(regs[i:i + 4]) for i in range(0, count, 4)]
    lines.append(f"  rflags={case.rflags:#x} ({flags_text(case.rflags, COMPARED_FLAGS)})")
    return lines


def format_disagreement(enc: EncodedCase, diffs: list[Difference]) -> str:
    case = enc.case
    out = [f"=== disagreement: mode {case.mode_name}, seed {case.seed}, index {case.index}",
           f"    rerun: python -m pyvmm.difftest --mode {case.mode_name} --seed {case.seed} "
           f"--index {case.index} --length {case.groups}"
           + (f" --families {','.join(case.families)}" if case.families else "")
           + (" --guard" if case.guard else "") + (" --wrap" if case.wrap else ""),
           "code:", *disassembly(enc), "initial state:", *initial_state_lines(enc),
           f"  {'':<14} {'native':<40} engine"]
    for diff in diffs:
        out.append(f"  {diff.what:<14} {diff.native:<40} {diff.engine}")
    return "\n".join(out)
