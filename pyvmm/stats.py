"""One counter store per VM that every engine and device fills.

Counters are grouped by category ("exits", "ports", "mmio", "exceptions",
"interrupts", "tlb", "decode", ...), each a name -> count mapping, so that
`pyvmm run --stats` and `pyvmm compare` can print any engine's work the same
way.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from pyvmm.schema import Int, MapOf, Maybe, Number, Record, Str

# Keys per category: some are guest-chosen (vectors, mnemonics), so past this
# many the rest count under OTHER and a guest cannot grow the table.
MAX_KEYS = 1024
OTHER = "(other)"
COUNT = Int(0, (1 << 63) - 1)
SECONDS = Number(0.0, 1e12)
# The shape of `as_dict()` as a snapshot carries it.
STATS_STATE = Record({
    "instructions": Maybe(COUNT), "wall_seconds": SECONDS, "guest_seconds": Maybe(SECONDS),
    "idle_seconds": SECONDS,
    "counters": MapOf(Str(64), MapOf(Str(200), COUNT, MAX_KEYS + 1), 256),
}, optional=frozenset({"idle_seconds", "guest_seconds", "instructions", "wall_seconds"}))


class Stats:
    def __init__(self) -> None:
        self.counters: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.instructions: int | None = None
        self.wall_seconds: float = 0.0
        self.guest_seconds: float | None = None  # time inside the guest (KVM_RUN), if known
        self.idle_seconds: float = 0.0  # host time the VMM slept for a halted guest

    def count(self, category: str, key: str, n: int = 1) -> None:
        counter = self.counters[category]
        if key not in counter and len(counter) >= MAX_KEYS:
            key = OTHER
        counter[key] += n

    def get(self, category: str, key: str) -> int:
        return self.counters.get(category, Counter()).get(key, 0)

    def total(self, category: str) -> int:
        return sum(self.counters.get(category, Counter()).values())

    def as_dict(self) -> dict:
        return {
            "instructions": self.instructions,
            "wall_seconds": self.wall_seconds,
            "guest_seconds": self.guest_seconds,
            "idle_seconds": self.idle_seconds,
            "counters": {cat: dict(sorted(c.items())) for cat, c in sorted(self.counters.items())
                         if c},
        }

    def format(self) -> str:
        """Human-readable report; the last line is always `exits: N`."""
        lines: list[str] = []
        if self.instructions is not None:
            lines.append(f"instructions: {self.instructions}")
            busy = self.wall_seconds - self.idle_seconds
            if busy > 0:
                note = " (time halted left out)" if self.idle_seconds else ""
                lines.append(f"guest MIPS: {self.instructions / busy / 1e6:.3f}{note}")
        lines.append(f"wall time: {self.wall_seconds:.3f} s")
        if self.guest_seconds is None and self.idle_seconds > 0:
            lines.append(f"  halted (idle): {self.idle_seconds:.3f} s")
        if self.guest_seconds is not None and self.wall_seconds > 0:
            vmm = max(0.0, self.wall_seconds - self.guest_seconds - self.idle_seconds)
            lines.append(f"  in the guest: {self.guest_seconds:.3f} s, halted (idle): "
                         f"{self.idle_seconds:.3f} s, in pyvmm: {vmm:.3f} s")
        for category in sorted(self.counters):
            counter = self.counters[category]
            if not counter:
                continue
            lines.append(f"{category}:")
            for key, value in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {key:<28} {value}")
        lines.append(f"exits: {self.total('exits')}")
        return "\n".join(lines)
