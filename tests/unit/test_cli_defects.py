"""Command-line defects of issue 12 item 9, each a one-line usage error that says
what is wrong, or a report whose numbers agree with each other."""

from __future__ import annotations

import re

import pytest

from pyvmm.engines.registry import ENGINES
from tests.conftest import run_pyvmm


def _one_error(*args: str) -> str:
    result = run_pyvmm(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyvmm: error: "), lines
    return lines[0]


def test_a_misspelled_option_is_blamed_alone_with_the_subcommand_help():
    line = _one_error("run", "--enigne", "interp", "demo")
    assert "--enigne" in line and "did you mean --engine?" in line
    assert "demo" not in line  # the guest is not blamed with it
    assert line.endswith("(see pyvmm run --help)")


def test_a_misspelled_compare_option_points_to_compare_help():
    line = _one_error("compare", "--engins", "kvm", "hello")
    assert "did you mean --engines?" in line and line.endswith("(see pyvmm compare --help)")


@pytest.mark.parametrize("option", ["-m", "--memory"])
def test_a_negative_memory_size_says_so(option):
    line = _one_error("run", option, "-5M", "hello")
    assert "'-5M': a size cannot be negative" in line
    assert "expected one argument" not in line


def test_timeout_nan_is_not_a_number():
    line = _one_error("run", "--timeout", "nan", "hello")
    assert "'nan' is not a number of seconds" in line and "positive" not in line


def test_a_negative_timeout_is_not_positive():
    assert "must be positive" in _one_error("run", "--timeout", "-3", "hello")


def test_an_option_after_a_value_option_is_still_an_option():
    # `--timeout --stats` is a missing value, not a timeout of "--stats".
    assert "expected one argument" in _one_error("run", "--timeout", "--stats", "hello")


def test_top_level_help_names_every_registered_engine():
    result = run_pyvmm("--help")
    text = " ".join(result.stdout.decode().split())
    for name in ENGINES:
        assert re.search(rf"\b{name} \(", text), (name, text)


def test_compare_progress_and_table_give_the_same_wall_time():
    result = run_pyvmm("compare", "--engines", "interp,jit", "hello")
    assert result.returncode == 0, result.stderr
    progress = dict(re.findall(r"compare: (\w+): ([0-9.]+) s,", result.stderr.decode()))
    row = next(line for line in result.stdout.decode().splitlines()
               if line.startswith("wall time (s)"))
    table = row.split()[3:]
    assert list(progress) == ["interp", "jit"] and len(table) == 2
    for shown, exact in zip(progress.values(), table, strict=True):
        # One measurement shown rounded to 2 and to 3 decimals: they differ by at most
        # 0.005 + 0.0005 (a 0.005 bound failed on float rounding at the boundary).
        assert float(shown) == pytest.approx(float(exact), abs=0.0055 + 1e-9)

