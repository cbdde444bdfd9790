"""The `board` fixture for loader tests (see boot_board.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from boot_board import make_board


@pytest.fixture
def board() -> Iterator:
    b = make_board()
    yield b
    b.close()
