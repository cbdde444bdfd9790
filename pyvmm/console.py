"""The host side of the guest's serial port: a terminal, a file, or nothing.

With a terminal on stdin and stdout, the terminal is put in raw mode and
becomes the guest's COM1, as QEMU's `-serial stdio` does: every key goes to
the guest, and Ctrl-A starts an escape (Ctrl-A x quits, Ctrl-A h helps,
Ctrl-A Ctrl-A sends a literal Ctrl-A).
"""

from __future__ import annotations

import io
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from typing import BinaryIO

from pyvmm.errors import ConfigError

ESCAPE_KEY = 0x01  # Ctrl-A
ESCAPE_HELP = (b"\r\nC-a h    print this help\r\n"
               b"C-a x    exit pyvmm\r\n"
               b"C-a C-a  send C-a to the guest\r\n")


PIPE_BUF = 4096  # a write this small into a pipe poll() calls writable never blocks


class StdoutWriter:
    """Guest output straight to the stdout descriptor (unbuffered, for raw mode),
    which a slow or vanished reader can neither kill nor stall past a deadline.

    - The reader went away (EPIPE, as with `pyvmm run demo | head -1`): the
      output is closed, `on_closed` is called once (the CLI stops the VM with
      StopKind.OUTPUT_CLOSED) and later bytes are discarded.
    - The reader does not read: while `deadline` (time.monotonic seconds) is
      set, a write waits for room at most until then and discards what does
      not fit, so --timeout still ends the run; without one it waits, the
      back-pressure a terminal gives.  Nothing is buffered here, so a stalled
      reader costs no host memory.
    """

    def __init__(self, fd: int | None = None) -> None:
        self.fd = sys.stdout.fileno() if fd is None else fd
        self.closed = False
        self.on_closed: Callable[[], None] | None = None
        self.deadline: float | None = None
        self.discarded = 0  # bytes dropped: reader gone, or not reading by the deadline

    def _room(self) -> bool:
        """Wait for the descriptor to take a PIPE_BUF write, until the deadline."""
        if self.deadline is None:
            return True
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        wait_ms = max(0, int((self.deadline - time.monotonic()) * 1000))
        return bool(poller.poll(wait_ms))

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view and not self.closed:
            if not self._room():
                break
            try:
                written = os.write(self.fd, view[:PIPE_BUF])
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True
                if self.on_closed is not None:
                    self.on_closed()
                break
            view = view[written:]
        self.discarded += len(view)
        return len(data)

    def flush(self) -> None:
        pass


class OutputCapture(io.RawIOBase):
    """A guest output (COM1, debugcon, PV console) collected in memory, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.data += data
        return len(data)


class _NullWriter:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def open_serial_output(spec: str, option: str = "--serial") -> tuple[BinaryIO, bool]:
    """Parse --serial (or --debugcon): returns (writer, is_stdio)."""
    if spec == "stdio":
        return StdoutWriter(), True  # type: ignore[return-value]
    if spec == "none":
        return _NullWriter(), False  # type: ignore[return-value]
    if spec.startswith("file:") and len(spec) > 5:
        path = spec[5:]
        try:
            return open(path, "wb", buffering=0), False
        except OSError as error:
            raise ConfigError(f"{option} {spec}: cannot open {path}: {error.strerror}") from None
    raise ConfigError(f"{option} {spec!r}: expected stdio, file:PATH or none")


def stdout_writer() -> BinaryIO:
    return StdoutWriter()  # type: ignore[return-value]


class TerminalConsole:
    """Raw-mode terminal input feeding the guest UART, with Ctrl-A escapes."""

    def __init__(self, on_input: Callable[[bytes], None], on_quit: Callable[[], None],
                 echo: Callable[[bytes], None]) -> None:
        self.on_input = on_input
        self.on_quit = on_quit
        self.echo = echo
        self.fd = sys.stdin.fileno()
        self._saved: list | None = None
        self._thread: threading.Thread | None = None
        self._stop_read, self._stop_write = os.pipe()
        self._escape = False

    @staticmethod
    def usable() -> bool:
        return sys.stdin.isatty() and sys.stdout.isatty()

    def __enter__(self) -> TerminalConsole:
        self._saved = termios.tcgetattr(self.fd)
        # TCSANOW, not setraw's default TCSAFLUSH: keys typed while pyvmm was
        # starting are the guest's input too, and must not be thrown away.
        tty.setraw(self.fd, termios.TCSANOW)
        self._thread = threading.Thread(target=self._reader, name="pyvmm-console",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.write(self._stop_write, b"x")
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        if self._thread is not None:
            self._thread.join(timeout=1)

    def _reader(self) -> None:
        import select

        while True:
            ready, _, _ = select.select([self.fd, self._stop_read], [], [])
            if self._stop_read in ready:
                return
            data = os.read(self.fd, 64)
            if not data:
                return
            self.feed(data)

    def feed(self, data: bytes) -> None:
        """Apply escape handling to typed bytes (public for tests)."""
        out = bytearray()
        for byte in data:
            if self._escape:
                self._escape = False
                if byte in (ord("x"), ord("X")):
                    if out:
                        self.on_input(bytes(out))
                    self.on_quit()
                    return
                if byte == ESCAPE_KEY:
                    out.append(ESCAPE_KEY)
                elif byte in (ord("h"), ord("H")):
                    self.echo(ESCAPE_HELP)
                continue
            if byte == ESCAPE_KEY:
                self._escape = True
                continue
            out.append(byte)
        if out:
            self.on_input(bytes(out))
