"""--record / --replay: typed serial input replayed byte for byte, under interp and jit.

The guest is a boot sector that sleeps in HLT with the PIT ticking at about
1 kHz and takes COM1's receive interrupt (16550 IER bit 0, IRQ4 through the
8259).  For each byte it prints the byte and the tick count at that moment,
so its output depends on *when* the host typed each byte.  A recording made
on a pseudo-terminal, replayed without any terminal, must print the same
bytes and exit with the same status.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time

import pytest

from pyvmm.engines.registry import engine_availability
from tests.conftest import ROOT
from tests.guests.test_terminal_console import _read_until, _wait_for_raw_mode
from tests.unit.kvm.kvm_guest import assemble

TICKS_BOOT_SECTOR = """
bits 16
org 0x7c00
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7000
    mov word [0x08*4], tick        ; IRQ0 -> vector 8
    mov word [0x08*4+2], 0
    mov word [0x0c*4], rx          ; IRQ4 -> vector 0x0c
    mov word [0x0c*4+2], 0
    mov al, 0x11                   ; 8259 ICW1: edge, cascade, ICW4
    out 0x20, al
    out 0xa0, al
    mov al, 0x08                   ; ICW2: vector bases 0x08 / 0x70
    out 0x21, al
    mov al, 0x70
    out 0xa1, al
    mov al, 4                      ; ICW3
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1                      ; ICW4: 8086 mode
    out 0x21, al
    out 0xa1, al
    mov al, 0xee                   ; unmask IRQ0 and IRQ4
    out 0x21, al
    mov al, 0xff
    out 0xa1, al
    mov al, 0x34                   ; PIT channel 0, mode 2, divisor 1193
    out 0x43, al
    mov al, 0xa9
    out 0x40, al
    mov al, 0x04
    out 0x40, al
    mov dx, 0x3f9                  ; IER: received-data interrupt
    mov al, 1
    out dx, al
    mov dx, 0x3fc                  ; MCR: OUT2 (the PC's IRQ gate)
    mov al, 0x08
    out dx, al
    sti
idle:
    hlt
    jmp idle

tick:
    inc word [ticks]
    push ax
    mov al, 0x20
    out 0x20, al
    pop ax
    iret

rx:
    push ax
    push bx
    push cx
    push dx
    mov dx, 0x3f8
    in al, dx
    cmp al, 'q'
    je quit
    call putc
    mov al, '@'
    call putc
    mov bx, [ticks]
    mov cx, 4
digit:
    rol bx, 4
    mov al, bl
    and al, 0x0f
    add al, '0'
    cmp al, '9'
    jbe emit
    add al, 7
emit:
    call putc
    loop digit
    mov al, 10
    call putc
    mov al, 0x20
    out 0x20, al
    pop dx
    pop cx
    pop bx
    pop ax
    iret
quit:
    mov al, 0x10
    out 0xf4, al
    hlt

putc:
    push dx
    mov dx, 0x3f8
    out dx, al
    pop dx
    ret

ticks: dw 0
times 510-($-$$) db 0
dw 0xaa55
"""

ENGINES = ["interp", "jit"]
# Each wait is for an event (the guest's echo, its exit); this only stops a hang.
HANG_GUARD_S = 600


@pytest.fixture
def ticks_image(tmp_path):
    path = tmp_path / "ticks.bin"
    path.write_bytes(assemble(TICKS_BOOT_SECTOR))
    return path


def _pyvmm(*args: str, **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    return subprocess.run([sys.executable, "-m", "pyvmm", "run", *args], cwd=ROOT,
                          capture_output=True, timeout=600, **kwargs)


def _record(engine: str, image, record_file, boot: tuple[str, ...] = ()) -> bytes:  # noqa: ANN001
    """Type three bytes with pauses between them, then 'q'; the guest's output."""
    master, slave = pty.openpty()
    boot = boot or ("--engine", engine, "--boot-sector", str(image))
    proc = subprocess.Popen([sys.executable, "-m", "pyvmm", "run", *boot,
                             "--record", str(record_file)],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=ROOT)
    os.close(slave)
    output = b""
    try:
        _wait_for_raw_mode(master, proc)
        for byte, pause in ((b"a", 0.05), (b"b", 0.3), (b"c", 0.0)):
            os.write(master, byte)
            output += _read_until(master, b"\n", HANG_GUARD_S)
            time.sleep(pause)
        os.write(master, b"q")
        assert proc.wait(timeout=HANG_GUARD_S) == 33, proc.stderr.read()
        output += _read_until(master, b"never", 0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return output.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("engine", ENGINES)
def test_replay_reproduces_typed_input_byte_for_byte(engine, ticks_image, tmp_path):
    ok, reason = engine_availability(engine)
    if not ok:
        pytest.skip(reason)
    record_file = tmp_path / "typed.replay"
    recorded = _record(engine, ticks_image, record_file)
    lines = recorded.split(b"\n")
    assert [line[:2] for line in lines[:3]] == [b"a@", b"b@", b"c@"], recorded
    ticks = [int(line[2:6], 16) for line in lines[:3]]
    assert ticks[1] > ticks[0]  # the guest slept between the bytes: its clock moved

    out = tmp_path / "replayed.txt"
    done = _pyvmm("--engine", engine, "--boot-sector", str(ticks_image),
                  "--replay", str(record_file), "--serial", f"file:{out}")
    # On failure, everything needed to find out why: both runs' output and the log.
    why = (f"recorded output {recorded!r}\nreplay stderr {done.stderr!r}\n"
           f"replayed output {out.read_bytes() if out.exists() else None!r}\n"
           f"record file {record_file.read_text()!r}")
    assert done.returncode == 33, why
    assert out.read_bytes() == b"\n".join(lines[:3]) + b"\n", why
    replayed = re.search(rb"replayed (\d+) of (\d+) inputs", done.stderr)
    assert replayed and replayed[1] == replayed[2] and int(replayed[1]) >= 4, why


def test_record_from_a_snapshot_and_replay_from_it(ticks_image, tmp_path):
    snapshot = tmp_path / "ticking.snap"
    done = _pyvmm("--engine", "interp", "--boot-sector", str(ticks_image), "--serial", "none",
                  "--snapshot-to", str(snapshot), "--snapshot-after-instructions", "500")
    assert done.returncode == 0, done.stderr
    record_file = tmp_path / "typed.replay"
    recorded = _record("jit", ticks_image, record_file, ("--restore", str(snapshot)))
    out = tmp_path / "replayed.txt"
    done = _pyvmm("--restore", str(snapshot), "--engine", "interp", "--replay",
                  str(record_file), "--serial", f"file:{out}")
    assert done.returncode == 33, done.stderr
    assert out.read_bytes() == recorded and recorded.count(b"\n") == 3


def test_a_replay_that_diverges_stops_with_the_instruction_count(ticks_image, tmp_path):
    record_file = tmp_path / "typed.replay"
    _record("interp", ticks_image, record_file)
    lines = record_file.read_text().splitlines()
    second = json.loads(lines[2])
    second["rip"] ^= 1  # the guest cannot be there
    lines[2] = json.dumps(second)
    record_file.write_text("\n".join(lines) + "\n")
    done = _pyvmm("--engine", "interp", "--boot-sector", str(ticks_image),
                  "--replay", str(record_file), "--serial", "none")
    assert done.returncode == 28, done.stderr
    assert f"at instruction {second['n']} the recording has rip".encode() in done.stderr


@pytest.mark.parametrize("damage", ["truncated", "not-a-log", "count-goes-back"])
def test_a_bad_record_file_is_a_one_line_error(damage, ticks_image, tmp_path):
    record_file = tmp_path / "bad.replay"
    header = '{"format":"pyvmm-input-log","version":1,"engine":"interp","wall_time_ns":0}\n'
    body = {
        "truncated": header + '{"n":5,"t":9,"kind":"serial","da',
        "not-a-log": "hello\n",
        "count-goes-back": header + '{"n":9,"t":9,"kind":"serial","data":"61","rip":1}\n'
                                    '{"n":3,"t":9,"kind":"serial","data":"62","rip":1}\n',
    }[damage]
    record_file.write_text(body)
    done = _pyvmm("--engine", "interp", "--boot-sector", str(ticks_image),
                  "--replay", str(record_file), "--serial", "none")
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr and str(record_file).encode() in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1


def test_record_under_kvm_is_refused_with_the_reason(ticks_image, tmp_path):
    done = _pyvmm("--engine", "kvm", "--boot-sector", str(ticks_image),
                  "--record", str(tmp_path / "x.replay"), "--serial", "none")
    ok, _ = engine_availability("kvm")
    if ok:
        assert done.returncode == 2 and b"counts guest instructions" in done.stderr
    else:
        assert done.returncode != 0 and b"Traceback" not in done.stderr
