"""A Python model of the bundled demo's serial output (guests/README.md, `demo`).

The checksums are recomputed from their definition (xorshift64* folded into
a rotating checksum, task A's demand-zero page added back), and the counts
from the tick-synchronous schedule (tasks start on tick 1 and exit on tick
work + 1; idle -> A -> B -> idle on every tick), so a test that compares a
run with this model checks the guest's arithmetic, the demand-zero page and
the per-tick scheduling, not a recorded output.  Shared by the QEMU oracle
tests and the tests that run the demo under pyvmm's engines.
"""

from __future__ import annotations

MASK = (1 << 64) - 1
SLICE_ITERS = 256  # xorshift64* steps per slice (demo/demo.inc)
XORSHIFT_MULT = 0x2545F4914F6CDD1D  # xorshift64* output multiplier
CHECKSUM_MIX = 0x9E3779B97F4A7C15  # final checksum = A * MIX + B (mod 2^64)
SEEDS = (0x0123456789ABCDEF, 0xFEDCBA9876543210)  # task A, task B


def _rol(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (64 - bits))) & MASK


def task_checksum(task: int, work: int) -> int:
    """What task `task` (0 = A, 1 = B) prints after `work` slices."""
    x, checksum = SEEDS[task], 0
    for _ in range(work * SLICE_ITERS):
        x ^= x >> 12
        x ^= (x << 25) & MASK
        x ^= x >> 27
        checksum = _rol(checksum, 7) ^ ((x * XORSHIFT_MULT) & MASK)
    if task == 0:  # task A adds back what it stored in its demand-zero page
        checksum = (checksum + (checksum if work else 0)) & MASK
    return checksum


def combined_checksum(work: int) -> int:
    """The summary line's checksum: A * CHECKSUM_MIX + B (mod 2^64)."""
    return (task_checksum(0, work) * CHECKSUM_MIX + task_checksum(1, work)) & MASK


def tick_synchronous_counts(work: int) -> tuple[int, int, int]:
    """(ticks, switches, syscalls) when every slice fits in one tick."""
    ticks = work + 1  # tasks start on tick 1 and exit on tick work + 1
    return ticks, 3 * ticks, 2 * (work + 3)  # per task: 2 writes, `work` waits, 1 exit


def expected_demo_output(work: int, *, ticks: int | None = None,
                         switches: int | None = None, b_done_first: bool = False) -> str:
    """The demo's exact serial output for `work=N`.

    By default the tick-synchronous run's.  A run whose slices outlast a tick
    (`spin=N`) computes the same checksums and makes the same system calls,
    but its tick and switch counts and the order of the two `done` lines
    depend on when the timer preempted task A: pass them to describe it.
    """
    a, b = task_checksum(0, work), task_checksum(1, work)
    sync_ticks, sync_switches, syscalls = tick_synchronous_counts(work)
    ticks = sync_ticks if ticks is None else ticks
    switches = sync_switches if switches is None else switches
    lines = [
        "demo: multiboot magic ok",
        f"demo: cmdline work={work}",
        "demo: long mode ok (4-level paging)",
        "demo: gdt, tss and idt loaded",
        "demo: pic remapped to 0x20/0x28",
        "demo: pit 100 Hz",
        "demo: starting 2 ring-3 tasks",
        "task A: started",
        "demo: page fault at 0000000040000010, mapped a demand-zero page",
    ]
    done_a = f"task A: done checksum={a:016x}"
    done_b = f"task B: done checksum={b:016x}"
    if work == 0:  # task A finishes within its first run, before B starts
        lines += [done_a, "task B: started", done_b]
    elif b_done_first:
        lines += ["task B: started", done_b, done_a]
    else:
        lines += ["task B: started", done_a, done_b]
    lines.append(f"demo: ticks={ticks} switches={switches} syscalls={syscalls} "
                 f"page_faults=1 checksum={combined_checksum(work):016x}")
    return "".join(line + "\r\n" for line in lines)
