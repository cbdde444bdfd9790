"""Run an encoded block on the real CPU through the oracle's helper process."""

from __future__ import annotations

from pyvmm.difftest.encode import EncodedCase
from pyvmm.oracle.native import DEFAULT_FXSAVE, NativeRunner
from pyvmm.oracle.result import ExecResult


def run_native(runner: NativeRunner, enc: EncodedCase) -> ExecResult:
    case = enc.case
    return runner.run(case.mode, enc.native_code, case.gprs, case.rflags, case.data,
                      end_rip=enc.trailer_ip, fxsave=case.fxsave or DEFAULT_FXSAVE)
