"""Machine reset: the CPU's state after RESET or INIT, and when a reset restarts the VM.

A reset line (the i8042's output port bit 0 pulsed by command 0xFE, port
0x92 bit 0, the PIIX3's reset control register at 0xCF9) stops the engine
with `StopKind.RESET`; the VM then restarts the machine when there is
something to restart: firmware mapped at the reset vector.  After RESET the
processor fetches at CS:IP F000:FFF0 with CS.base 0xFFFF0000, physical
0xFFFFFFF0 (Intel SDM Vol. 3A §9.1.1, Table 9-1, §9.1.4).

A kernel loaded directly (multiboot, Linux, a boot sector: no BIOS) has no
code at the reset vector, so its reset stops the VM with a reason instead;
so does every reset under `--no-reboot` (QEMU's option of that name).
Either way the exit status is `StopKind.RESET`'s.
"""

from __future__ import annotations

from dataclasses import replace

from pyvmm.cpu.state import CpuState, SegmentState

RESET_CS_SELECTOR = 0xF000  # CS selector after RESET (SDM Vol. 3A Table 9-1)
RESET_CS_BASE = 0xFFFF0000  # CS hidden base after RESET (SDM Vol. 3A §9.1.4)
RESET_IP = 0xFFF0  # EIP after RESET: CS.base + EIP = 0xFFFFFFF0
# EDX after RESET holds the processor signature (family/model/stepping,
# SDM Vol. 3A §9.1.2); 0x600 = family 6, model 0, stepping 0.
RESET_EDX_SIGNATURE = 0x600


def reset_state() -> CpuState:
    """The architectural state after RESET (SDM Vol. 3A §9.1.1, Table 9-1)."""
    state = CpuState()  # defaults: CR0=0x60000010, EFLAGS=2, data segments 0/0/FFFF, DR6/DR7
    state.segments["cs"] = SegmentState(selector=RESET_CS_SELECTOR, base=RESET_CS_BASE,
                                        limit=0xFFFF, type=0xB)
    state.rip = RESET_IP
    state.set_gpr("rdx", RESET_EDX_SIGNATURE)
    return state


def cpu_reset_state(previous: CpuState, hard: bool) -> CpuState:
    """The CPU after a hard reset (RESET) or a soft one (INIT) from `previous`.

    INIT sets the same registers as RESET but leaves the x87/SSE state, the
    MSRs and IA32_APIC_BASE as they were (SDM Vol. 3A Table 9-1, "INIT" column).
    """
    state = reset_state()
    if hard:
        return state
    return replace(state, fpu_image=previous.fpu_image, msrs=dict(previous.msrs),
                   apic_base=previous.apic_base)


def reset_refusal(firmware: bool, no_reboot: bool, image: str | None) -> str | None:
    """Why a reset stops the VM instead of restarting it; None: it restarts."""
    if no_reboot:
        return "--no-reboot: the VM stops instead of restarting"
    if not firmware:
        what = f"a {image} image" if image else "the image"
        return (f"{what} loaded directly (no BIOS) has no firmware at the reset vector "
                "to restart, so the VM stops")
    return None
