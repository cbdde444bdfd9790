"""Intel 8042 keyboard controller (ports 0x60/0x64) and system control port A (0x92).

Facts relied on (IBM PC/AT Technical Reference, "Keyboard controller";
the de-facto 8042 command set documented by OSDev and QEMU's pckbd.c):
status bit 0 = output buffer full, bit 1 = input buffer full, bit 2 =
system flag (command byte bit 2), bit 3 = last write was a command (port
0x64) rather than data.  Controller output port bit 0 is the CPU reset
line (active low) and bit 1 is the A20 gate; command 0xFx pulses low, for
about 6 us, the output-port bits 0-3 whose command bits are 0, so 0xFE pulses
only the reset line.  Port 0x92 bit 0 is the fast reset, bit 1 the A20 gate.

The controller executes every command at once, so IBF always reads 0.  A
minimal keyboard answers on the other end of the data port: it ACKs (0xFA)
every command, 0xFF (reset) adds 0xAA (BAT passed), 0xF2 (identify) adds
0xAB 0x83, 0xEE (echo) answers 0xEE.

The controller's output buffer holds one byte, as on the real 8042: a
controller reply replaces whatever byte is there.  The keyboard's own bytes
wait in the keyboard's 16-byte buffer (IBM PS/2 Keyboard Technical Reference,
"Buffer") and move into the output buffer as the guest reads it; bytes beyond
16 are lost, so a guest that never reads port 0x60 cannot grow host memory.
No IRQ 1/12 is raised (no line is wired to this device); guests poll OBF.

Byte-wide device: a 2- or 4-byte access uses the low byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pyvmm.schema import U8, Bool, ListOf, Maybe, Pair, Record

STATUS_OBF = 0x01  # output buffer full: a byte waits at port 0x60
STATUS_IBF = 0x02  # input buffer full: the controller has not taken the last write
STATUS_SYS = 0x04  # system flag (copy of command byte bit 2)
STATUS_CMD = 0x08  # 1 = last write went to port 0x64 (command), 0 = port 0x60 (data)
STATUS_UNLOCKED = 0x10  # keyboard inhibit switch off (keyboard not locked)
STATUS_AUX_OBF = 0x20  # the byte in the output buffer is from the aux (mouse) port

CB_KBD_INT = 0x01  # command byte bit 0: IRQ 1 on keyboard output
CB_SYS = 0x04  # command byte bit 2: system flag (POST passed)
CB_KBD_DISABLE = 0x10  # command byte bit 4: keyboard clock disabled
CB_AUX_DISABLE = 0x20  # command byte bit 5: aux clock disabled
CB_XLATE = 0x40  # command byte bit 6: scan code set 1 translation
CB_DEFAULT = CB_KBD_INT | CB_SYS | CB_XLATE  # what a BIOS leaves behind

OUT_RESET = 0x01  # output port bit 0: CPU reset line, active low
OUT_A20 = 0x02  # output port bit 1: A20 gate
OUT_DEFAULT = OUT_RESET | OUT_A20  # reset inactive, A20 enabled
PULSE_MASK = 0x0F  # 0xF0-0xFF pulse the output-port bits 0-3 that are 0 in the command

CMD_READ_CB = 0x20  # read command byte (0x21-0x3F: controller RAM)
CMD_WRITE_CB = 0x60  # write command byte (0x61-0x7F: controller RAM)
CMD_RAM_LAST = 0x1F  # highest controller RAM index addressable by 0x2x/0x6x
CMD_AUX_DISABLE = 0xA7  # disable aux port
CMD_AUX_ENABLE = 0xA8  # enable aux port
CMD_AUX_TEST = 0xA9  # aux interface test -> 0x00 (no error)
CMD_SELF_TEST = 0xAA  # controller self-test -> 0x55
CMD_KBD_TEST = 0xAB  # keyboard interface test -> 0x00 (no error)
CMD_KBD_DISABLE = 0xAD  # disable keyboard
CMD_KBD_ENABLE = 0xAE  # enable keyboard
CMD_READ_INPUT = 0xC0  # read input port
CMD_READ_OUTPUT = 0xD0  # read output port
CMD_WRITE_OUTPUT = 0xD1  # write output port (next data byte)
CMD_WRITE_KBD_OUT = 0xD2  # next data byte appears as keyboard output
CMD_WRITE_AUX_OUT = 0xD3  # next data byte appears as aux output
CMD_WRITE_AUX = 0xD4  # next data byte goes to the aux device (none attached)
CMD_A20_DISABLE = 0xDD  # HP Vectra extension: A20 off
CMD_A20_ENABLE = 0xDF  # HP Vectra extension: A20 on
CMD_PULSE_FIRST = 0xF0  # 0xF0-0xFF: pulse output port bits

SELF_TEST_OK = 0x55
INTERFACE_TEST_OK = 0x00
INPUT_PORT_VALUE = 0x80  # input port bit 7: keyboard not inhibited

KBD_ACK = 0xFA  # keyboard acknowledges a command
KBD_BAT_OK = 0xAA  # basic assurance test passed (after reset)
KBD_RESET = 0xFF
KBD_IDENTIFY = 0xF2
KBD_ECHO = 0xEE
KBD_ID = (0xAB, 0x83)  # MF2 keyboard
# Keyboard commands that take a parameter byte (LEDs, typematic, scan set).
KBD_COMMANDS_WITH_ARG = frozenset((0xED, 0xF0, 0xF3))

KBD_BUFFER = 16  # bytes the keyboard itself buffers
PORT92_RESET = 0x01  # port 0x92 bit 0: fast reset
PORT92_A20 = 0x02  # port 0x92 bit 1: A20 gate


@dataclass
class I8042State:
    command_byte: int = CB_DEFAULT
    output_port: int = OUT_DEFAULT
    ram: list[int] = field(default_factory=lambda: [0] * (CMD_RAM_LAST + 1))
    output: list[list[int]] = field(default_factory=list)  # at most one [byte, from_aux]
    keyboard: list[int] = field(default_factory=list)  # the keyboard's buffer (<= 16)
    pending: int | None = None  # command waiting for its data byte
    kbd_pending: int | None = None  # keyboard command waiting for its argument
    last_was_command: bool = False


# Snapshot shape: one output byte, the keyboard's 16-byte buffer, 32 RAM bytes.
I8042_STATE = Record({
    "command_byte": U8, "output_port": U8, "ram": ListOf(U8, CMD_RAM_LAST + 1, CMD_RAM_LAST + 1),
    "output": ListOf(Pair((U8, Bool())), 0, 1), "keyboard": ListOf(U8, 0, KBD_BUFFER),
    "pending": Maybe(U8), "kbd_pending": Maybe(U8), "last_was_command": Bool(),
})
PORT92_STATE = Record({"value": U8})


class _Port:
    """One of the controller's two ports; forwards to the controller."""

    def __init__(self, read: Callable[[], int], write: Callable[[int], None]) -> None:
        self._read = read
        self._write = write

    def io_read(self, offset: int, size: int) -> int:
        return self._read()

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._write(value & 0xFF)


class I8042:
    """Keyboard controller: `.data_port` (0x60) and `.command_port` (0x64)."""

    def __init__(self, on_reset: Callable[[], None]) -> None:
        self.on_reset = on_reset
        self.s = I8042State()
        self.data_port = _Port(self._read_data, self._write_data)
        self.command_port = _Port(self.status, self._write_command)

    @property
    def a20(self) -> bool:
        return bool(self.s.output_port & OUT_A20)

    # -- registers ------------------------------------------------------------
    def status(self) -> int:
        s = self.s
        value = STATUS_UNLOCKED
        if s.output:
            value |= STATUS_OBF
            if s.output[0][1]:
                value |= STATUS_AUX_OBF
        if s.command_byte & CB_SYS:
            value |= STATUS_SYS
        if s.last_was_command:
            value |= STATUS_CMD
        return value

    def _push(self, value: int, aux: bool = False) -> None:
        """A controller reply: the one-byte output buffer now holds `value`."""
        self.s.output[:] = [[value, aux]]

    def _send(self, *data: int) -> None:
        """Bytes from the keyboard: into its bounded buffer, then the output buffer."""
        keyboard = self.s.keyboard
        keyboard.extend(data[:max(0, KBD_BUFFER - len(keyboard))])
        self._refill()

    def _refill(self) -> None:
        s = self.s
        if not s.output and s.keyboard:
            s.output.append([s.keyboard.pop(0), False])

    def _read_data(self) -> int:
        s = self.s
        if not s.output:
            return 0  # empty buffer: the last byte stays latched on real parts
        value = s.output.pop()[0]
        self._refill()
        return value

    # -- command port (0x64) ------------------------------------------------------
    def _write_command(self, cmd: int) -> None:
        s = self.s
        s.last_was_command = True
        s.pending = None
        if cmd == CMD_READ_CB:
            self._push(s.command_byte)
        elif CMD_READ_CB < cmd <= CMD_READ_CB + CMD_RAM_LAST:
            self._push(s.ram[cmd - CMD_READ_CB])
        elif CMD_WRITE_CB <= cmd <= CMD_WRITE_CB + CMD_RAM_LAST:
            s.pending = cmd
        elif cmd in (CMD_WRITE_OUTPUT, CMD_WRITE_KBD_OUT, CMD_WRITE_AUX_OUT, CMD_WRITE_AUX):
            s.pending = cmd
        elif cmd == CMD_AUX_DISABLE:
            s.command_byte |= CB_AUX_DISABLE
        elif cmd == CMD_AUX_ENABLE:
            s.command_byte &= ~CB_AUX_DISABLE
        elif cmd in (CMD_AUX_TEST, CMD_KBD_TEST):
            self._push(INTERFACE_TEST_OK)
        elif cmd == CMD_SELF_TEST:
            s.command_byte |= CB_SYS
            self._push(SELF_TEST_OK)
        elif cmd == CMD_KBD_DISABLE:
            s.command_byte |= CB_KBD_DISABLE
        elif cmd == CMD_KBD_ENABLE:
            s.command_byte &= ~CB_KBD_DISABLE
        elif cmd == CMD_READ_INPUT:
            self._push(INPUT_PORT_VALUE)
        elif cmd == CMD_READ_OUTPUT:
            self._push(s.output_port)
        elif cmd == CMD_A20_DISABLE:
            s.output_port &= ~OUT_A20
        elif cmd == CMD_A20_ENABLE:
            s.output_port |= OUT_A20
        elif cmd >= CMD_PULSE_FIRST:
            if not cmd & OUT_RESET:
                self.on_reset()  # the pulse on bit 0 resets the CPU
        # Anything else is ignored, as QEMU does.

    # -- data port (0x60) -------------------------------------------------------------
    def _write_data(self, value: int) -> None:
        s = self.s
        s.last_was_command = False
        pending, s.pending = s.pending, None
        if pending is None:
            self._keyboard(value)
        elif pending == CMD_WRITE_CB:
            s.command_byte = value
        elif CMD_WRITE_CB < pending <= CMD_WRITE_CB + CMD_RAM_LAST:
            s.ram[pending - CMD_WRITE_CB] = value
        elif pending == CMD_WRITE_OUTPUT:
            self._write_output_port(value)
        elif pending == CMD_WRITE_KBD_OUT:
            self._push(value)
        elif pending == CMD_WRITE_AUX_OUT:
            self._push(value, aux=True)
        # CMD_WRITE_AUX: no mouse attached; the byte is lost.

    def _write_output_port(self, value: int) -> None:
        """Bit 0 written 0 asserts the (active-low) CPU reset line."""
        self.s.output_port = value | OUT_RESET
        if not value & OUT_RESET:
            self.on_reset()

    def _keyboard(self, value: int) -> None:
        """The attached keyboard's answer to a byte sent to it."""
        s = self.s
        if s.kbd_pending is not None:
            s.kbd_pending = None
            self._send(KBD_ACK)
        elif value == KBD_ECHO:
            self._send(KBD_ECHO)
        elif value == KBD_RESET:
            self._send(KBD_ACK, KBD_BAT_OK)
        elif value == KBD_IDENTIFY:
            self._send(KBD_ACK, *KBD_ID)
        else:
            if value in KBD_COMMANDS_WITH_ARG:
                s.kbd_pending = value
            self._send(KBD_ACK)

    # -- snapshot ---------------------------------------------------------------------
    def get_state(self) -> dict:
        return asdict(self.s)

    def set_state(self, state: dict) -> None:
        I8042_STATE.check(state)
        self.s = I8042State(**state)
        self.s.output = [list(entry) for entry in self.s.output]
        self.s.ram = list(self.s.ram)
        self.s.keyboard = list(self.s.keyboard)


class SystemControlPortA:
    """Port 0x92: bit 0 written 1 resets the CPU (fast reset), bit 1 is A20."""

    def __init__(self, on_reset: Callable[[], None]) -> None:
        self.on_reset = on_reset
        self.value = PORT92_A20  # bit 0 always reads 0 (the reset is a pulse)

    @property
    def a20(self) -> bool:
        return bool(self.value & PORT92_A20)

    def io_read(self, offset: int, size: int) -> int:
        return self.value

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.value = value & 0xFF & ~PORT92_RESET
        if value & PORT92_RESET:
            self.on_reset()

    def get_state(self) -> dict:
        return {"value": self.value}

    def set_state(self, state: dict) -> None:
        PORT92_STATE.check(state)
        self.value = state["value"]
