"""Fixtures for the differential tests: one native runner per test module."""

from __future__ import annotations

import pytest

from pyvmm.oracle.build import compiler


def gcc_skip_reason() -> str | None:
    return None if compiler() else "gcc is not installed: the native oracle cannot be built"


@pytest.fixture(scope="module")
def native_runner():
    reason = gcc_skip_reason()
    if reason:
        pytest.skip(reason)
    from pyvmm.oracle.native import NativeRunner
    runner = NativeRunner()
    yield runner
    runner.close()
