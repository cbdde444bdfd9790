"""Run code blocks on the real CPU, in a helper process (the oracle).

The helper (native_runner.c) maps the code and data areas at the addresses
in `layout`, loads every GPR and RFLAGS, jumps to the code in the requested
mode and reports the state when the code's trailer jumps to its exit stub,
or when a fault arrives as a signal (vector from the kernel's trap number).
Running it in its own process keeps a wild test from hurting Python.
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass

from pyvmm.oracle import layout
from pyvmm.oracle.build import build_runner
from pyvmm.oracle.result import ExecResult

MAGIC = 0x4F4D5650
_HELLO = struct.Struct("<6Q")
_REQUEST = struct.Struct("<II17Q")
_RESPONSE = struct.Struct("<IIQQ17QQ")

FXSAVE_SIZE = 512
# FXSAVE image of the state after FNINIT and a reset MXCSR (SDM Vol. 1 §8.1.10, §11.6.4):
# FCW 0x037F, MXCSR 0x1F80, every register zero.
DEFAULT_FXSAVE = (struct.pack("<H", 0x037F) + bytes(22) + struct.pack("<II", 0x1F80, 0xFFFF)
                  ).ljust(FXSAVE_SIZE, b"\0")

STATUS_DONE = 0
STATUS_EXCEPTION = 1
STATUS_TIMEOUT = 2

# Linux x86-64 user code selector (arch/x86/include/asm/segment.h): 64-bit, DPL 3.
USER_CS64 = 0x33


class OracleError(RuntimeError):
    """The native runner could not be started or died."""


@dataclass(frozen=True)
class RunnerInfo:
    code_base: int
    data_base: int
    data_size: int
    exit_stub: int  # 64-bit address every trailer jumps to
    ldt_ok: bool  # 16-bit LDT segments could be installed (modify_ldt)
    ldt_errno: int


class NativeRunner:
    """A running helper process; call `run()` per block, `close()` at the end."""

    def __init__(self) -> None:
        path = build_runner()
        self._proc = subprocess.Popen([str(path)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, bufsize=0)
        hello = self._read(_HELLO.size)
        magic, code_base, data_base, data_size, exit_stub, ldt = _HELLO.unpack(hello)
        if magic != MAGIC:
            raise OracleError(f"bad hello from native runner: {hello!r}")
        if (code_base, data_base, data_size) != (layout.CODE_BASE, layout.DATA_BASE,
                                                 layout.DATA_SIZE):
            raise OracleError("native runner layout does not match pyvmm.oracle.layout")
        self.info = RunnerInfo(code_base, data_base, data_size, exit_stub,
                               bool(ldt & 1), ldt >> 32)

    def supports(self, mode: int) -> tuple[bool, str]:
        """(True, "") if `mode` can run natively here, else (False, reason)."""
        if mode == 16 and not self.info.ldt_ok:
            return False, (f"modify_ldt refused 16-bit segments (errno {self.info.ldt_errno});"
                           " 16-bit code cannot run natively on this kernel")
        return True, ""

    def _read(self, n: int) -> bytes:
        assert self._proc.stdout is not None
        chunks = []
        while n:
            chunk = self._proc.stdout.read(n)
            if not chunk:
                code = self._proc.poll()
                raise OracleError(f"native runner exited (status {code})")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def run(self, mode: int, code: bytes, gprs: list[int], rflags: int, data: bytes,
            end_rip: int, fxsave: bytes = DEFAULT_FXSAVE) -> ExecResult:
        """Run `code` (which must end in a trailer jumping to `info.exit_stub`).

        `end_rip` is the offset reported as RIP when the block completes: the
        address of its trailer, where the emulator's HLT would sit.
        """
        if len(data) != layout.DATA_SIZE:
            raise ValueError("data must fill the data area")
        if len(fxsave) != FXSAVE_SIZE:
            raise ValueError("the FXSAVE image must be 512 bytes")
        assert self._proc.stdin is not None
        request = _REQUEST.pack(mode, len(code), *(g & (2**64 - 1) for g in gprs), rflags)
        try:
            self._proc.stdin.write(request + code + data + fxsave)
        except BrokenPipeError as error:
            raise OracleError("native runner died") from error
        head = self._read(_RESPONSE.size)
        status, vector, error_code, addr, *rest = _RESPONSE.unpack(head)
        regs, flags, rip = rest[:16], rest[16], rest[17]
        out_data = self._read(layout.DATA_SIZE)
        out_fx = self._read(FXSAVE_SIZE)
        if status == STATUS_DONE:
            return ExecResult(list(regs), flags, end_rip, out_data, fxsave=out_fx)
        if status == STATUS_TIMEOUT:
            return ExecResult(list(regs), flags, rip, out_data, timed_out=True, fxsave=out_fx)
        return ExecResult(list(regs), flags, rip, out_data, vector=vector,
                          error_code=error_code, fault_address=addr if vector == 14 else None,
                          fxsave=out_fx)

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> NativeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
