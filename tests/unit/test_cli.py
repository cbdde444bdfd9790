"""The command line: options, errors and exit statuses a user sees."""

from __future__ import annotations

import argparse

import pytest

from pyvmm.board.pc import MIB
from pyvmm.cli import parse_size
from tests.conftest import run_pyvmm


@pytest.mark.parametrize("text, expected", [
    ("64M", 64 * MIB), ("64m", 64 * MIB), ("1G", 1024 * MIB), ("512K", 512 * 1024),
    ("128", 128 * MIB),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "infG", "-5", "-1M"])
def test_parse_size_rejects_garbage(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


@pytest.mark.parametrize("args, message", [
    (["run", "--frobnicate", "hello"], "unrecognized arguments: --frobnicate"),
    (["run", "--engine", "foo", "hello"], "argument --engine: invalid choice: 'foo'"),
    (["run", "-m", "lots", "hello"], "invalid size 'lots'"),
    (["run", "--debugcon", "tty", "hello"],
     "--debugcon 'tty': expected stdio, file:PATH or none"),
    ([], "the following arguments are required: COMMAND"),
])
def test_usage_errors_are_one_line(args, message):
    result = run_pyvmm(*args)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyvmm: error: ") and message in lines[0]


@pytest.mark.parametrize("make_path", ["/dev/zero", "fifo"])
def test_non_regular_image_files_are_refused_at_once(tmp_path, make_path):
    """/dev/zero never ends and a FIFO blocks on open: neither may hang or eat memory."""
    import os

    path = make_path
    if make_path == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    result = run_pyvmm("run", "--engine", "interp", "--kernel", path, timeout=20)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"pyvmm: error: {path}: not a regular file"


def test_append_to_a_boot_sector_guest_is_refused():
    result = run_pyvmm("run", "--append", "x", "hello")
    assert result.returncode == 2
    assert b"--append only applies to multiboot kernels" in result.stderr


def test_help_explains_exit_statuses():
    result = run_pyvmm("run", "--help")
    assert result.returncode == 0
    assert b"exit status" in result.stdout
    assert b"--boot-sector" in result.stdout


def test_missing_kernel_file_is_one_line_error(tmp_path):
    # The image is checked before any engine is set up, so this holds without /dev/kvm too.
    result = run_pyvmm("run", "--kernel", str(tmp_path / "nope.elf"))
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines == [f"pyvmm: error: {tmp_path / 'nope.elf'}: no such file"]


def test_unknown_bundled_guest():
    result = run_pyvmm("run", "doom")
    assert result.returncode == 2
    assert b"unknown guest 'doom'" in result.stderr


def test_two_images_rejected(tmp_path):
    result = run_pyvmm("run", "--kernel", "a", "--boot-sector", "b")
    assert result.returncode == 2
    assert b"exactly one" in result.stderr


def test_memory_out_of_range():
    result = run_pyvmm("run", "-m", "1M", "hello")
    assert result.returncode in (2, 18)  # 18 only when the default engine is unavailable
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("engine", ["kvm", "interp"])
def test_malformed_boot_sector_one_line(tmp_path, engine):
    image = tmp_path / "bad.bin"
    image.write_bytes(b"\x90" * 512)  # no 0x55AA signature
    result = run_pyvmm("run", "--engine", engine, "--boot-sector", str(image))
    assert result.returncode in (2, 18), result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyvmm: error:")
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["inf", "1e308", "1e12", "nan", "-1", "0"])
def test_absurd_timeouts_are_one_line_usage_errors(value):
    """No host wait can be armed for them: refused before any VM starts."""
    result = run_pyvmm("run", "--timeout", value, "hello")
    assert result.returncode == 2
    errors = [line for line in result.stderr.decode().splitlines() if "error:" in line]
    assert len(errors) == 1 and "--timeout" in errors[0], result.stderr
    assert b"Traceback" not in result.stderr


def test_too_many_vms_is_a_one_line_error():
    result = run_pyvmm("run", "--vms", "100000000", "hello")
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "pyvmm: error: --vms: at most 64 VMs"


def test_restoring_from_a_device_file_is_refused_at_once():
    result = run_pyvmm("run", "--restore", "/dev/zero", timeout=20)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "pyvmm: error: /dev/zero: not a regular file"
