"""The GDB remote stub: `pyvmm run --gdb tcp::1234` (`-s`), `-S` to start paused.

One client at a time on a TCP socket (localhost unless a host is given); a
second client is refused while one is attached.  When gdb connects, the VM
stops; when it detaches or disconnects, the VM runs on, and a new gdb may
attach later — QEMU's habits.  Packets are dispatched from one table
(`GdbStub._COMMANDS`, by first letter, and `_QUERIES` for q/Q/v packets);
an unknown command gets the empty reply the protocol defines for
"not supported" (GDB manual E.1), a malformed one "E01", a memory access to
an unmapped address "E14".  Nothing a client sends stops or crashes the VM.

Monitor commands (`monitor ...` in gdb, qRcmd): see MONITOR_HELP.
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
import time
from collections.abc import Callable

from pyvmm.debug import registers as regs
from pyvmm.debug.rsp import (
    MAX_PACKET,
    Interrupt,
    Malformed,
    Packet,
    PacketDecoder,
    encode_packet,
    escape_binary,
    unescape_binary,
)
from pyvmm.debug.target import RUN_SLICE, DebugTarget, MemoryFault, Stop
from pyvmm.errors import ConfigError
from pyvmm.machine.stop import StopKind, StopReason

MAX_MEMORY_READ = (MAX_PACKET - 8) // 2
ACCESS_KINDS = {3: "rwatch", 4: "awatch"}  # Z3, Z4
MONITOR_HELP = """monitor commands:
  info registers     every register, including the hidden segment state
  info mem           the linear ranges the page tables map
  info tlb           the same, one line per mapped page
  xp/N ADDR          N bytes of guest-physical memory at ADDR (hex)
  stats              the VM's counters so far
  snapshot FILE      save a snapshot of the stopped VM (pyvmm run --restore FILE)
  help               this text
"""


def parse_gdb_address(text: str) -> tuple[str, int]:
    """QEMU's spelling: `tcp::1234`, `tcp:HOST:PORT`, or a bare port; port 0 picks
    a free one (the stub prints which)."""
    host, port = "127.0.0.1", text
    if text.startswith("tcp:"):
        _, host_part, port = text.split(":", 2) if text.count(":") >= 2 else ("", "", "")
        host = host_part or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--gdb {text}: expected tcp::PORT or tcp:HOST:PORT") from None
    if not 0 <= number < 65536:
        raise ConfigError(f"--gdb {text}: port must be 0-65535 (0: any free port)")
    return host, number


class _Client:
    """One connected gdb: a reader thread turns its bytes into events."""

    def __init__(self, sock: socket.socket, on_interrupt: Callable[[], None]) -> None:
        self.sock = sock
        self.events: queue.Queue = queue.Queue()
        self.decoder = PacketDecoder()
        self.no_ack = False
        self.interrupted = threading.Event()
        self.alive = True
        self._on_interrupt = on_interrupt
        self._thread = threading.Thread(target=self._read, daemon=True, name="gdb-client")
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    break
                for event in self.decoder.feed(data):
                    if isinstance(event, Interrupt):
                        self.interrupted.set()
                        self._on_interrupt()
                    self.events.put(event)
        except OSError:
            pass
        self.alive = False
        self.events.put(None)
        self._on_interrupt()

    def send(self, payload: bytes) -> None:
        try:
            self.sock.sendall(encode_packet(payload))
        except OSError:
            self.alive = False

    def ack(self, good: bool) -> None:
        if not self.no_ack:
            try:
                self.sock.sendall(b"+" if good else b"-")
            except OSError:
                self.alive = False

    def close(self) -> None:
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class _Resume(Exception):
    def __init__(self, step: bool) -> None:
        self.step = step


class _Detach(Exception):
    pass


class _Kill(Exception):
    pass


class GdbStub:
    """Serves one VM to gdb; `serve()` replaces `vm.run()`."""

    def __init__(self, vm, address: str, wait_for_client: bool,  # noqa: ANN001 - VirtualMachine
                 log=sys.stderr) -> None:  # noqa: ANN001
        self.vm = vm
        self.host, self.port = parse_gdb_address(address)
        self.wait_for_client = wait_for_client
        self.log = log
        self.target: DebugTarget | None = None
        self._arch: str | None = None
        self.client: _Client | None = None
        self._pending: queue.Queue = queue.Queue()  # accepted sockets waiting to attach
        self._closing = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((self.host, self.port))
        except OSError as error:
            self.listener.close()
            raise ConfigError(f"--gdb: cannot listen on {self.host}:{self.port}: "
                              f"{error.strerror}") from None
        self.listener.listen(2)
        self.port = self.listener.getsockname()[1]
        self.refused = 0
        self.malformed = 0
        self._accepting = threading.Thread(target=self._accept, daemon=True, name="gdb-accept")
        self._accepting.start()

    # -- connections -----------------------------------------------------------
    def _accept(self) -> None:
        while not self._closing:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if self.client is not None and self.client.alive or not self._pending.empty():
                self.refused += 1  # one debugger at a time
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pending.put(sock)
            self._pause_vm()

    def _pause_vm(self) -> None:
        engine = self.vm.engine
        engine.request_pause()
        engine.wake()

    def _attach(self, sock: socket.socket) -> None:
        self.client = _Client(sock, self._pause_vm)
        self.target = DebugTarget(self.vm)
        self._arch = None
        print(f"pyvmm: gdb attached; {self.vm.name} stopped", file=self.log, flush=True)

    def close(self) -> None:
        self._closing = True
        self.listener.close()
        if self.client is not None:
            self.client.close()

    # -- the loop --------------------------------------------------------------
    def serve(self, timeout: float | None = None) -> StopReason:
        """Run the VM under the debugger until it ends (or gdb kills it)."""
        print(f"pyvmm: gdb stub listening on {self.host}:{self.port}"
              + (" (guest paused until gdb continues)" if self.wait_for_client else ""),
              file=self.log, flush=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if self.wait_for_client:
                self._attach(self._pending.get())
            while True:
                if self.client is None:
                    if not self._pending.empty():
                        self._attach(self._pending.get())
                        continue
                    # Nobody attached: the guest runs, in slices, so that a
                    # connection is noticed even if its pause request came
                    # between two runs.
                    slice_ = RUN_SLICE
                    if deadline is not None:
                        slice_ = min(slice_, deadline - time.monotonic())
                        if slice_ <= 0:
                            return StopReason(StopKind.TIMEOUT, f"after {timeout} s")
                    reason = self.vm.run(slice_)
                    if reason.kind is StopKind.TIMEOUT or (
                            reason.kind is StopKind.PAUSED and reason.message == "pause requested"):
                        continue
                    return reason
                outcome = self._session(deadline)
                if outcome is not None:
                    return outcome
        finally:
            self.close()

    def _session(self, deadline: float | None) -> StopReason | None:
        """Serve the attached client; None when it detached (the VM runs on)."""
        client, target = self.client, self.target
        assert client is not None and target is not None
        try:
            while True:
                try:
                    self._serve_packets(client, target)
                except _Resume as resume:
                    client.interrupted.clear()
                    stop = target.resume(resume.step, client.interrupted.is_set, deadline)
                    if not client.alive:
                        raise _Detach from None
                    client.send(self._stop_reply(stop))
        except _Detach:
            target.remove_all()
            target._commit()
            self.client = None
            client.close()
            print("pyvmm: gdb detached; the guest runs on", file=self.log, flush=True)
            if target.ended is not None:
                return target.ended
            return None
        except _Kill:
            target.remove_all()
            client.close()
            self.client = None
            return target.ended or StopReason(StopKind.USER_QUIT, "killed by gdb")

    def _serve_packets(self, client: _Client, target: DebugTarget) -> None:
        while True:
            event = client.events.get()
            if event is None:
                raise _Detach
            if isinstance(event, Malformed):
                self.malformed += 1
                client.ack(False)
                continue
            if not isinstance(event, Packet):
                continue  # acks, and Ctrl-C while already stopped
            client.ack(True)
            reply = self._dispatch(event.payload, target)
            if reply is not None:
                client.send(reply)

    def _dispatch(self, payload: bytes, target: DebugTarget) -> bytes | None:
        if not payload:
            return b""
        handler = self._COMMANDS.get(payload[:1])
        if handler is None:
            return b""
        try:
            return handler(self, payload[1:], target)
        except MemoryFault:
            return b"E14"
        except (_Resume, _Detach, _Kill):
            raise
        except (ValueError, IndexError, KeyError, UnicodeDecodeError, OverflowError):
            self.malformed += 1
            return b"E01"

    # -- stop replies ------------------------------------------------------------
    def _stop_reply(self, stop: Stop) -> bytes:
        reason = stop.reason
        if reason is not None and reason.kind is StopKind.DEBUG_EXIT:
            assert reason.guest_status is not None
            return b"W%02x" % (reason.guest_status & 0xFF)
        reply = b"T%02xthread:01;" % stop.signal
        if stop.kind in ("watch", "rwatch", "awatch"):
            reply += b"%s:%x;" % (stop.kind.encode(), stop.address)
        elif stop.kind:
            reply += stop.kind.encode() + b":;"
        if reason is not None:
            print(f"pyvmm: {self.vm.name} stopped under gdb: {reason.describe()}",
                  file=self.log, flush=True)
        return reply

    def _question(self, _: bytes, target: DebugTarget) -> bytes:
        if target.ended is not None:
            return self._stop_reply(Stop(5, reason=target.ended))
        return b"T05thread:01;"

    # -- registers -----------------------------------------------------------------
    def _rows(self, target: DebugTarget) -> tuple[regs.Register, ...]:
        return regs.LAYOUTS[self._architecture(target)]

    def _architecture(self, target: DebugTarget) -> str:
        architecture = self._arch
        if architecture is None:  # fixed for the connection, chosen when gdb asks
            architecture = self._arch = regs.layout_for(target.state, target.image_is_64bit())
        return architecture

    def _read_registers(self, _: bytes, target: DebugTarget) -> bytes:
        return regs.encode_all(self._rows(target), target.state)

    def _write_registers(self, data: bytes, target: DebugTarget) -> bytes:
        regs.decode_into(self._rows(target), target.state, data)
        target.mark_dirty()
        return b"OK"

    def _read_register(self, data: bytes, target: DebugTarget) -> bytes:
        rows = self._rows(target)
        number = int(data, 16)
        if number >= len(rows):
            return b"E45"
        return regs.encode_one(rows[number], target.state)

    def _write_register(self, data: bytes, target: DebugTarget) -> bytes:
        number_text, value_text = data.split(b"=", 1)
        rows = self._rows(target)
        number = int(number_text, 16)
        if number >= len(rows):
            return b"E45"
        row = rows[number]
        raw = bytes.fromhex(value_text.decode("ascii"))
        if len(raw) != row.bits // 8:
            return b"E01"
        row.set(target.state, int.from_bytes(raw, "little"))
        target.mark_dirty()
        return b"OK"

    # -- memory ------------------------------------------------------------------
    @staticmethod
    def _address_length(text: bytes) -> tuple[int, int]:
        address, length = text.split(b",", 1)
        return int(address, 16), int(length, 16)

    def _read_memory(self, data: bytes, target: DebugTarget) -> bytes:
        address, length = self._address_length(data)
        length = min(length, MAX_MEMORY_READ)
        return target.read_memory(address, length).hex().encode()

    def _write_memory(self, data: bytes, target: DebugTarget) -> bytes:
        head, body = data.split(b":", 1)
        address, length = self._address_length(head)
        raw = bytes.fromhex(body.decode("ascii"))
        if len(raw) != length:
            return b"E01"
        target.write_memory(address, raw)
        return b"OK"

    def _write_binary(self, data: bytes, target: DebugTarget) -> bytes:
        head, body = data.split(b":", 1)
        address, length = self._address_length(head)
        raw = unescape_binary(body)
        if len(raw) != length:
            return b"E01"
        if raw:
            target.write_memory(address, raw)
        return b"OK"

    # -- breakpoints ----------------------------------------------------------------
    def _breakpoint(self, data: bytes, target: DebugTarget, insert: bool) -> bytes:
        kind_text, address_text, length_text = data.split(b";", 1)[0].split(b",")
        kind, address, length = int(kind_text), int(address_text, 16), int(length_text, 16)
        if kind == 0:
            if insert:
                target.insert_breakpoint(address)
            else:
                target.remove_breakpoint(address)
        elif kind == 1:
            (target.hw_breakpoints.add if insert else target.hw_breakpoints.discard)(address)
        elif kind == 2:
            if insert:
                target.insert_watchpoint(address, length)
            else:
                target.remove_watchpoint(address)
        elif kind in (3, 4):
            if not insert:
                target.remove_access_watchpoint(address)
                return b"OK"
            try:
                target.insert_access_watchpoint(address, length, ACCESS_KINDS[kind])
            except NotImplementedError:
                return b""  # this engine cannot (target.py): gdb says so
        else:
            return b""
        return b"OK"

    def _insert(self, data: bytes, target: DebugTarget) -> bytes:
        return self._breakpoint(data, target, True)

    def _remove(self, data: bytes, target: DebugTarget) -> bytes:
        return self._breakpoint(data, target, False)

    # -- control -------------------------------------------------------------------
    def _continue(self, data: bytes, target: DebugTarget) -> bytes:
        self._set_pc(data, target)
        raise _Resume(step=False)

    def _step(self, data: bytes, target: DebugTarget) -> bytes:
        self._set_pc(data, target)
        raise _Resume(step=True)

    @staticmethod
    def _set_pc(data: bytes, target: DebugTarget) -> None:
        if data:
            target.state.rip = int(data.split(b";")[0], 16)
            target.mark_dirty()

    def _detach(self, _: bytes, target: DebugTarget) -> bytes:
        assert self.client is not None
        self.client.send(b"OK")
        raise _Detach

    def _kill(self, _: bytes, target: DebugTarget) -> bytes:
        target.ended = target.ended or StopReason(StopKind.USER_QUIT, "killed by gdb")
        raise _Kill

    def _thread(self, _: bytes, target: DebugTarget) -> bytes:
        return b"OK"  # one thread: every H/T packet names it

    # -- queries ----------------------------------------------------------------------
    def _query(self, data: bytes, target: DebugTarget) -> bytes:
        name = data.split(b":", 1)[0].split(b",", 1)[0]
        handler = self._QUERIES.get(b"q" + name)
        return b"" if handler is None else handler(self, data[len(name):], target)

    def _set(self, data: bytes, target: DebugTarget) -> bytes:
        name = data.split(b":", 1)[0]
        handler = self._QUERIES.get(b"Q" + name)
        return b"" if handler is None else handler(self, data[len(name):], target)

    def _v(self, data: bytes, target: DebugTarget) -> bytes:
        if data == b"Cont?":
            return b"vCont;c;C;s;S"
        if data.startswith(b"Cont;"):
            action = data[5:6]
            if action in (b"c", b"C"):
                raise _Resume(step=False)
            if action in (b"s", b"S"):
                raise _Resume(step=True)
            return b"E01"
        if data.startswith(b"Kill"):
            target.ended = target.ended or StopReason(StopKind.USER_QUIT, "killed by gdb")
            assert self.client is not None
            self.client.send(b"OK")
            raise _Kill
        return b""

    def _supported(self, data: bytes, target: DebugTarget) -> bytes:
        return (b"PacketSize=%x;qXfer:features:read+;swbreak+;hwbreak+;"
                b"QStartNoAckMode+;vContSupported+" % MAX_PACKET)

    def _xfer(self, data: bytes, target: DebugTarget) -> bytes:
        # :features:read:target.xml:OFFSET,LENGTH
        parts = data.split(b":")
        if len(parts) != 5 or parts[1:3] != [b"features", b"read"]:
            return b""
        if parts[3] != b"target.xml":
            return b"E00"
        offset, length = self._address_length(parts[4])
        document = regs.target_xml(self._architecture(target)).encode()
        chunk = document[offset:offset + min(length, MAX_MEMORY_READ)]
        more = offset + len(chunk) < len(document)
        return (b"m" if more else b"l") + escape_binary(chunk)

    def _no_ack(self, data: bytes, target: DebugTarget) -> bytes:
        assert self.client is not None
        self.client.send(b"OK")
        self.client.no_ack = True
        return None  # type: ignore[return-value]  # already answered, before the switch

    def _rcmd(self, data: bytes, target: DebugTarget) -> bytes:
        command = bytes.fromhex(data.lstrip(b",").decode("ascii")).decode("utf-8", "replace")
        from pyvmm.debug.monitor import run_monitor_command

        text = run_monitor_command(command.strip(), target, self.vm, MONITOR_HELP)
        assert self.client is not None
        for start in range(0, len(text), 1024):  # console output: O packets, hex
            self.client.send(b"O" + text[start:start + 1024].encode().hex().encode())
        return b"OK"

    _COMMANDS: dict[bytes, Callable[..., bytes | None]] = {
        b"?": _question, b"g": _read_registers, b"G": _write_registers,
        b"p": _read_register, b"P": _write_register, b"m": _read_memory,
        b"M": _write_memory, b"X": _write_binary, b"Z": _insert, b"z": _remove,
        b"c": _continue, b"s": _step, b"D": _detach, b"k": _kill, b"H": _thread,
        b"T": _thread, b"q": _query, b"Q": _set, b"v": _v,
    }
    _QUERIES: dict[bytes, Callable[..., bytes | None]] = {
        b"qSupported": _supported, b"qXfer": _xfer,
        b"qAttached": lambda self, data, target: b"1",
        b"qC": lambda self, data, target: b"QC01",
        b"qfThreadInfo": lambda self, data, target: b"m01",
        b"qsThreadInfo": lambda self, data, target: b"l",
        b"qSymbol": lambda self, data, target: b"OK",
        b"qRcmd": _rcmd,
        b"QStartNoAckMode": _no_ack,
    }

