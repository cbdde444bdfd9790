"""A stand-in interrupt controller input for device tests: records the line."""

from __future__ import annotations


class Sink:
    """Remembers the IRQ line's level and counts its rising edges."""

    def __init__(self) -> None:
        self.level = False
        self.rises = 0

    def set_irq(self, irq: int, level: bool) -> None:
        if level and not self.level:
            self.rises += 1
        self.level = level
