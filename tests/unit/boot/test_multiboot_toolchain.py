"""Multiboot kernels built by the real toolchain (nasm + GNU ld), not by our own builder.

This guards against the loader and the test-image builder sharing one
misreading of the ELF format.
"""

import shutil
import subprocess

import pytest

from pyvmm.boot import load_multiboot

pytestmark = pytest.mark.skipif(not (shutil.which("nasm") and shutil.which("ld")),
                                reason="needs nasm and GNU ld")

SOURCE = """
bits 32
section .multiboot
align 4
    dd 0x1BADB002
    dd 0x3
    dd -(0x1BADB002 + 0x3)
section .text
global _start
_start:
    mov eax, 0x12345678
    mov [counter], eax
    hlt
section .data
message: db "hello from ld", 0
section .bss
counter: resd 1
big: resb 0x3000
"""


def build(tmp_path, bits: int) -> tuple[bytes, dict[str, int]]:
    asm = tmp_path / "k.asm"
    asm.write_text(SOURCE)
    obj, elf = tmp_path / "k.o", tmp_path / "k.elf"
    fmt, emulation = ("elf32", "elf_i386") if bits == 32 else ("elf64", "elf_x86_64")
    subprocess.run(["nasm", "-f", fmt, str(asm), "-o", str(obj)], check=True)
    script = tmp_path / "k.ld"
    script.write_text("ENTRY(_start) SECTIONS { . = 0x100000; "
                      ".text : { *(.multiboot) *(.text) } "
                      ".data ALIGN(4096) : { *(.data) } .bss : { *(.bss) } }")
    subprocess.run(["ld", "-m", emulation, "-z", "max-page-size=0x1000", "-T", str(script),
                    str(obj), "-o", str(elf)], check=True)
    nm = subprocess.run(["nm", str(elf)], check=True, capture_output=True, text=True).stdout
    symbols = {name: int(addr, 16) for addr, _, name in (line.split() for line in nm.splitlines())}
    return elf.read_bytes(), symbols


@pytest.mark.parametrize("bits", [32, 64])
def test_ld_built_kernel(board, tmp_path, bits):
    image, symbols = build(tmp_path, bits)
    board.memory.write(symbols["counter"], b"\xff" * 4)
    state = load_multiboot(board, image)
    assert state.rip == symbols["_start"]
    # mov eax, imm32 (B8 id) then mov [moffs32], eax (A3 od): nasm's encodings.
    assert board.memory.read(symbols["_start"], 5) == b"\xb8\x78\x56\x34\x12"
    assert board.memory.read(symbols["message"], 14) == b"hello from ld\0"
    assert board.memory.read(symbols["counter"], 4) == bytes(4)  # bss zeroed
    assert board.memory.read(0x100000, 4) == (0x1BADB002).to_bytes(4, "little")
