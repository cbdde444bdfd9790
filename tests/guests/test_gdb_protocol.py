"""The GDB stub against a hostile or clumsy client, over a real socket.

Nothing a client sends may stop or crash the VM: bad checksums get `-`,
unknown packets the empty reply, malformed ones `E01`, unmapped memory
`E14`; a second client is refused while one is attached; a client that
vanishes mid-packet leaves the guest running.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyvmm.debug.rsp import encode_packet
from tests.conftest import ROOT

SPIN = b"\xeb\xfe"  # jmp $ : a guest that runs until stopped


@pytest.fixture
def spinner(tmp_path) -> Path:
    image = tmp_path / "spin.bin"
    image.write_bytes(SPIN + bytes(510 - len(SPIN)) + b"\x55\xaa")
    return image


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def _read_until(self, pattern: bytes) -> bytes:
        while True:
            match = re.search(pattern, self.buffer, re.DOTALL)
            if match:
                self.buffer = self.buffer[match.end():]
                return match.group(0)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data

    def ask(self, payload: bytes) -> bytes:
        self.sock.sendall(encode_packet(payload))
        return self.reply()

    def reply(self) -> bytes:
        while True:
            frame = self._read_until(rb"\+|-|\$[^#]*#..")
            if frame.startswith(b"$"):
                self.sock.sendall(b"+")
                payload = frame[1:-3]
                if payload.startswith(b"O") and payload != b"OK":
                    self.console = getattr(self, "console", b"") + bytes.fromhex(
                        payload[1:].decode())
                    continue
                return payload

    def close(self) -> None:
        self.sock.close()


def start(*args: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "pyvmm", "run", "--engine", "interp", "--serial", "none",
         "--gdb", "tcp::0", "-S", "--timeout", "120", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    line = process.stderr.readline().decode()
    match = re.search(r"listening on [\d.]+:(\d+)", line)
    assert match, line
    return process, int(match.group(1))


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_hostile_packets_get_protocol_answers(spinner):
    process, port = start("--boot-sector", str(spinner))
    try:
        client = Client(port)
        assert client.ask(b"?") == b"T05thread:01;"
        # A bad checksum is refused with '-' and the packet is not executed.
        client.sock.sendall(b"$g#00")
        assert client._read_until(rb"\+|-") == b"-"
        assert client.ask(b"vMustReplyEmpty") == b""  # unknown: the empty reply
        assert client.ask(b"m12345") == b"E01"  # no length
        assert client.ask(b"mzz,4") == b"E01"
        assert client.ask(b"M7c00,2:zz") == b"E01"
        assert client.ask(b"Pffff=00") == b"E45"
        assert client.ask(b"pzz") == b"E01"
        assert client.ask(b"Z0,,") == b"E01"
        assert client.ask(b"G00") == b"E01"  # wrong length for the layout
        # Unmapped physical memory (paging is off): an error, never a crash.
        assert client.ask(b"m7ffffff0,4") == b"E14"
        assert client.ask(b"Z0,fffff000,1") == b"E14"
        # An oversized length is clamped to what fits in a packet.
        assert len(client.ask(b"m0,ffffffff")) <= 0x4000
        # A packet longer than PacketSize is dropped with '-'.
        client.sock.sendall(b"$" + b"m" * 0x5000 + b"#00")
        assert client._read_until(rb"\+|-") == b"-"
        # Real memory still reads: the boot sector at 0x7c00.
        assert client.ask(b"m7c00,2") == SPIN.hex().encode()
        # A second client while one is attached is refused.
        second = socket.create_connection(("127.0.0.1", port), timeout=30)
        assert second.recv(16) == b""
        second.close()
        # Ctrl-C stops a running guest with SIGINT.
        client.sock.sendall(encode_packet(b"c"))
        assert client._read_until(rb"\+") == b"+"
        time.sleep(0.3)
        client.sock.sendall(b"\x03")
        assert client.reply() == b"T02thread:01;"
        # Monitor commands answer on the console.
        assert client.ask(b"qRcmd," + b"info registers".hex().encode()) == b"OK"
        assert b"cs=0000" in client.console
        # The guest is still alive; a client vanishing mid-packet leaves it running.
        client.sock.sendall(b"$m7c0")
        client.close()
        time.sleep(0.5)
        assert process.poll() is None
        # ... and a new gdb can attach to the running guest.
        third = Client(port)
        assert third.ask(b"?") == b"T05thread:01;"
        assert third.ask(b"m7c00,2") == SPIN.hex().encode()
        third.sock.sendall(encode_packet(b"k"))
        process.wait(timeout=30)
        assert process.returncode == 0  # killed by gdb: a user quit
    finally:
        stop(process)
