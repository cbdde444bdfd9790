"""Processor exceptions as Python exceptions inside the interpreter.

An instruction that faults raises `CpuFault`; the run loop catches it and
delivers the exception through the IVT/IDT exactly as hardware would (SDM
Vol. 3A §6.15, "Exception and Interrupt Reference").  Nothing else in the
interpreter should raise out of an instruction.
"""

from __future__ import annotations

# Exception vectors (SDM Vol. 3A Table 6-1).
DE = 0  # divide error (fault)
DB = 1  # debug (fault or trap)
NMI = 2
BP = 3  # breakpoint (trap)
OF = 4  # overflow (trap)
BR = 5  # BOUND range exceeded (fault)
UD = 6  # invalid opcode (fault)
NM = 7  # device not available (fault)
DF = 8  # double fault (abort, error code 0)
TS = 10  # invalid TSS (fault, error code)
NP = 11  # segment not present (fault, error code)
SS = 12  # stack-segment fault (fault, error code)
GP = 13  # general protection (fault, error code)
PF = 14  # page fault (fault, error code, CR2)
MF = 16  # x87 floating-point error
AC = 17  # alignment check (fault, error code 0)
MC = 18
XM = 19  # SIMD floating-point

# Vectors that push an error code in protected/long mode (SDM Vol. 3A §6.13).
ERROR_CODE_VECTORS = frozenset({DF, TS, NP, SS, GP, PF, AC, 21})

# Contributory exceptions, for the double-fault rules (SDM Vol. 3A Table 6-4).
CONTRIBUTORY = frozenset({DE, TS, NP, SS, GP})

# Page-fault error code bits (SDM Vol. 3A §4.7, Figure 4-12).
PF_PRESENT = 1 << 0  # 0: not-present page; 1: protection violation
PF_WRITE = 1 << 1
PF_USER = 1 << 2
PF_RESERVED = 1 << 3
PF_FETCH = 1 << 4

VECTOR_NAMES = {
    DE: "#DE divide error", DB: "#DB debug", NMI: "NMI", BP: "#BP breakpoint",
    OF: "#OF overflow", BR: "#BR bound range", UD: "#UD invalid opcode",
    NM: "#NM device not available", DF: "#DF double fault", TS: "#TS invalid TSS",
    NP: "#NP segment not present", SS: "#SS stack fault", GP: "#GP general protection",
    PF: "#PF page fault", MF: "#MF x87 error", AC: "#AC alignment check",
    MC: "#MC machine check", XM: "#XM SIMD error",
}


class CpuFault(Exception):
    """A processor exception raised by the instruction being executed.

    `error_code` is None for vectors that push none.  `cr2` is set for #PF.
    Faults restart the instruction (the saved RIP is the faulting one); the
    run loop takes care of that.
    """

    def __init__(self, vector: int, error_code: int | None = None,
                 cr2: int | None = None) -> None:
        super().__init__(vector, error_code, cr2)
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2

    def __str__(self) -> str:
        text = VECTOR_NAMES.get(self.vector, f"vector {self.vector}")
        if self.error_code is not None:
            text += f" (error code {self.error_code:#x})"
        if self.cr2 is not None:
            text += f" at {self.cr2:#x}"
        return text


def gp(error_code: int = 0) -> CpuFault:
    return CpuFault(GP, error_code)


def ss(error_code: int = 0) -> CpuFault:
    return CpuFault(SS, error_code)


def np_(error_code: int) -> CpuFault:
    return CpuFault(NP, error_code)


def ts(error_code: int) -> CpuFault:
    return CpuFault(TS, error_code)


def ud() -> CpuFault:
    return CpuFault(UD)


def de() -> CpuFault:
    return CpuFault(DE)


def pf(linear: int, error_code: int) -> CpuFault:
    return CpuFault(PF, error_code, linear)


def selector_error_code(selector: int, external: bool = False, idt: bool = False) -> int:
    """Error code for a segment-related fault (SDM Vol. 3A §6.13, Figure 6-7)."""
    code = selector & 0xFFFC
    if idt:
        code = (selector << 3) | 2
    if external:
        code |= 1
    return code
