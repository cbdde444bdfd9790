"""A repeated string instruction yields at iteration boundaries (issue 12, finding 7).

SDM Vol. 2B "REP": interrupts are recognised between iterations with IP left
at the instruction.  One execution does at most REP_CHUNK elements, so the
run loop's --timeout and interrupt checks are bounded by work, not by one
instruction; the restarted instruction must finish with the same result.
"""

from __future__ import annotations

import pytest

from pyvmm.engines.interp.semantics.string import REP_CHUNK
from tests.unit.interp.guest import HAVE_NASM
from tests.unit.interp.test_shift import RCX, _machine, run

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

RSI, RDI = 6, 7
DST = 0x300000


def test_backward_rep_stosb_across_many_chunks_finishes_exactly() -> None:
    """DF=1 takes the element loop (not the forward bulk path): 3.5 chunks."""
    count = 3 * REP_CHUNK + REP_CHUNK // 2
    mem = _machine("x86-64")[0].memory
    mem.write(DST, bytes(count + 2))
    top = DST + count
    s = run("std\nmov al, 0x5a\nrep stosb\ncld", {RDI: top, RCX: count})
    assert mem.read(DST + 1, count) == b"\x5a" * count
    assert mem.read(DST, 1) == b"\x00" and mem.read(top + 1, 1) == b"\x00"
    assert (s.gprs[RCX], s.gprs[RDI]) == (0, top - count)


def test_repe_cmpsb_past_a_chunk_keeps_its_flags() -> None:
    count = REP_CHUNK + 10
    mem = _machine("x86-64")[0].memory
    src, dst = DST, DST + 0x80000
    mem.write(src, b"\x01" * count)
    mem.write(dst, b"\x01" * (count - 1) + b"\x02")
    s = run("repe cmpsb", {RSI: src, RDI: dst, RCX: count})
    assert s.gprs[RCX] == 0 and s.gprs[RSI] == src + count
    assert not s.rflags & 0x40  # ZF clear: the last bytes differ
    assert s.rflags & 0x1  # CF: 1 - 2 borrows
