"""x87 and SSE: not emulated.

Chosen behaviour (documented in the engine README): with no FPU,
an x87 instruction raises #NM when CR0.EM or CR0.TS is set (SDM Vol. 3A
§2.5, Table 2-2) and #UD otherwise; on the 8086 model an ESC opcode
(D8-DF) is a no-op that only consumes its ModRM bytes (no 8087 attached).
SSE and other extensions are #UD (no builder is registered for them).
Every such instruction is counted in stats["unsupported"].
"""

from __future__ import annotations

import iced_x86
from iced_x86 import CpuidFeature, Mnemonic

from pyvmm.cpu.state import CR0_EM, CR0_TS
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.faults import NM, UD, CpuFault
from pyvmm.engines.interp.semantics import semantic

_FPU_FEATURES = frozenset({CpuidFeature.FPU, CpuidFeature.FPU287, CpuidFeature.FPU287XL_ONLY,
                           CpuidFeature.FPU387, CpuidFeature.FPU387SL_ONLY})


def _x87_mnemonics() -> list[int]:
    names = [n for n in dir(Mnemonic) if n.startswith("F") and n.isupper()]
    return [getattr(Mnemonic, n) for n in names
            if n not in ("FEMMS",)]


@semantic(*_x87_mnemonics())
def _x87(b: Insn) -> Handler:
    if not _FPU_FEATURES.intersection(b.ins.cpuid_features()):
        raise NotImplementedError
    cpu = b.cpu
    if cpu.legacy:
        return b.compile(b.next)  # ESC with no coprocessor: nothing happens
    name = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL).format_mnemonic(b.ins)
    stats = cpu.stats

    def handler() -> None:
        stats.count("unsupported", name)
        if cpu.cr0 & (CR0_EM | CR0_TS):
            raise CpuFault(NM)
        raise CpuFault(UD)
    return handler
