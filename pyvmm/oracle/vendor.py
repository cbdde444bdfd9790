"""Which vendor's CPU the oracle is, against the one pyvmm models.

pyvmm's CPUID says GenuineIntel (pyvmm/cpu/cpuid.py), so where the SDM leaves a
result undefined or Intel and AMD CPUs differ, the engines do what Intel CPUs
measurably do.  On another vendor's host those cases are not compared: the
differential tester masks them and the tests that pin them skip.
"""

from __future__ import annotations

from functools import cache

from pyvmm.cpu.cpuid import VENDOR_INTEL

MODELLED_VENDOR = VENDOR_INTEL.decode()


@cache
def host_vendor() -> str:
    """The host CPU's CPUID vendor string (/proc/cpuinfo's vendor_id), or "" if unknown."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def host_is_modelled_vendor() -> bool:
    return host_vendor() == MODELLED_VENDOR


def vendor_skip_reason(what: str) -> str | None:
    """Why a test pinning `what` (an Intel-measured behaviour) cannot run here, or None."""
    if host_is_modelled_vendor():
        return None
    return (f"{what} is {MODELLED_VENDOR}'s behaviour, which pyvmm models; this host's CPU "
            f"is {host_vendor() or 'of unknown vendor'}, which differs there")


# What difftest's --guard blocks reach that Intel and AMD hosts do differently:
# EFLAGS after a REPE/REPNE CMPS/SCAS faulting part-way (restored to their value
# before it, SDM Vol. 2B "REP"; an AMD host kept the last iteration's) and MOVSXD
# r16's read (a word; an AMD host reads a doubleword).
GUARD_DIVERGENCES = ("what --guard blocks reach (REPE/REPNE CMPS/SCAS faulting part-way, "
                     "MOVSXD r16 next to an unmapped page)")
