"""Guests that misbehave stop *their* VM with a readable reason and a documented status.

Each guest is a tiny multiboot kernel (a.out kludge, 32-bit protected mode)
assembled here with NASM; every case runs under every available engine
through the real CLI, and must never show a Python traceback.
"""

from __future__ import annotations

import pytest

from pyvmm.engines.registry import engine_availability
from tests.conftest import run_pyvmm
from tests.unit.kvm.kvm_guest import assemble

HEADER = """
bits 32
org 0x100000
MB_MAGIC equ 0x1BADB002
MB_FLAGS equ 0x00010002          ; memory info + a.out kludge addresses
mb_header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    dd mb_header, mb_header, 0, 0, start
start:
"""

GUESTS = {
    # The VM stops at an access above RAM that no device claims.
    "unmapped": "    mov eax, [0x40000000]\n    mov al, 0x10\n    out 0xf4, al\n    hlt\n",
    # An exception with an empty IDT: #UD -> #DF -> shutdown.
    "triple-fault": "    lidt [empty_idt]\n    ud2\nempty_idt: dw 0\n    dd 0\n",
    "halted": "    cli\n    hlt\n",
    "spin": "    jmp $\n",
    # With --unmapped ignore, the read returns all ones (open bus).
    "open-bus": ("    mov eax, [0x40000000]\n    cmp eax, 0xffffffff\n    jne bad\n"
                 "    mov al, 0x10\n    out 0xf4, al\nbad:\n    mov al, 0x11\n    out 0xf4, al\n"),
}

CASES = [
    # guest, extra options, exit status, words in the stop reason
    ("unmapped", [], 20, "4-byte read of physical address 0x40000000"),
    ("triple-fault", [], 6, "triple fault"),
    ("halted", [], 8, "halted with interrupts disabled"),
    ("spin", ["--timeout", "1"], 4, "timeout"),
    ("open-bus", ["--unmapped", "ignore"], 33, "debug-exit with status 33"),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("misbehaving")
    paths = {}
    for name, body in GUESTS.items():
        path = folder / f"{name}.bin"
        path.write_bytes(assemble(HEADER + body))
        paths[name] = path
    return paths


@pytest.mark.parametrize("engine", ["kvm", "interp"])
@pytest.mark.parametrize("guest, options, status, reason", CASES,
                         ids=[case[0] for case in CASES])
def test_misbehaving_guest_stops_cleanly(images, engine, guest, options, status, reason):
    ok, why = engine_availability(engine)
    if not ok:
        pytest.skip(why)
    result = run_pyvmm("run", "--engine", engine, "--kernel", str(images[guest]), *options,
                       timeout=60)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert result.returncode == status, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyvmm: vm0 stopped: "), stderr
    assert reason in lines[0]
