"""Turn a generated block into the bytes each side runs.

Both sides run the same body at the same address; only the trailer differs
(SDM Vol. 2A "HLT", "JMP"): the emulator ends with HLT (CPL 0, IF=0, so the
engine stops), the native runner with a jump to its exit stub, far (to the
64-bit user code selector) when the block runs in 16- or 32-bit code.
iced's BlockEncoder resolves the branch labels and RIP-relative operands.
"""

from __future__ import annotations

from dataclasses import dataclass

from iced_x86 import BlockEncoder, Code, Decoder, Instruction, Mnemonic

from pyvmm.difftest.generator import TestCase
from pyvmm.oracle.layout import CODE_BASE
from pyvmm.oracle.native import USER_CS64


@dataclass
class EncodedCase:
    case: TestCase
    code_ip: int  # offset of the first byte from the CS base
    native_code: bytes
    engine_code: bytes
    decoded: list[Instruction]  # the body, decoded at its final offsets
    trailer_ip: int  # offset where both trailers start

    @property
    def mode(self) -> int:
        return self.case.mode


class EncodeMismatch(RuntimeError):
    """The block encoder changed the block's shape (e.g. rewrote a far LOOP)."""


def _canonical(instr: Instruction) -> int:
    # XCHG eAX,eAX is decoded as NOP (opcode 90h, SDM Vol. 2B "XCHG").
    return Mnemonic.XCHG if instr.mnemonic == Mnemonic.NOP else instr.mnemonic


def code_offset(mode: int) -> int:
    """Where the block starts, as an offset in CS (16-bit CS has base CODE_BASE)."""
    return 0 if mode == 16 else CODE_BASE


def _encode(case: TestCase, trailer: Instruction, ip: int) -> bytes:
    trailer.ip = case.end_label
    encoder = BlockEncoder(case.mode)
    encoder.add_many([*case.body, trailer])
    return encoder.encode(ip)


def encode_case(case: TestCase, exit_stub: int) -> EncodedCase:
    ip = code_offset(case.mode)
    engine_code = _encode(case, Instruction.create(Code.HLT), ip)
    if case.mode == 64:
        native_trailer = Instruction.create_branch(Code.JMP_REL32_64, exit_stub)
    else:
        native_trailer = Instruction.create_far_branch(Code.JMP_PTR1632, USER_CS64, exit_stub)
    native_code = _encode(case, native_trailer, ip)
    decoder = Decoder(case.mode, engine_code, ip=ip)
    decoded = [decoder.decode() for _ in case.body]
    trailer_ip = decoder.ip
    if [_canonical(d) for d in decoded] != [_canonical(b) for b in case.body] \
            or engine_code[trailer_ip - ip:] != b"\xf4" \
            or native_code[:trailer_ip - ip] != engine_code[:trailer_ip - ip]:
        raise EncodeMismatch(f"case {case.seed}/{case.index}: encoded block differs from plan")
    return EncodedCase(case, ip, native_code, engine_code, decoded, trailer_ip)
