"""8042 keyboard controller and port 0x92."""

import json

from pyvmm.devices.i8042 import I8042, SystemControlPortA


def make():
    resets = []
    kbc = I8042(lambda: resets.append(True))
    return kbc, resets


def cmd(kbc, value):
    kbc.command_port.io_write(0, 1, value)


def status(kbc):
    return kbc.command_port.io_read(0, 1)


def data(kbc):
    assert status(kbc) & 0x01, "output buffer empty"
    return kbc.data_port.io_read(0, 1)


def test_pulse_reset_command_calls_on_reset():
    kbc, resets = make()
    cmd(kbc, 0xFE)
    assert resets == [True]
    cmd(kbc, 0xFF)  # pulses nothing
    cmd(kbc, 0xFD)  # pulses bit 1 only (not reset)
    assert resets == [True]


def test_self_test_and_interface_test():
    kbc, _ = make()
    cmd(kbc, 0xAA)
    assert data(kbc) == 0x55
    assert not status(kbc) & 0x01
    cmd(kbc, 0xAB)
    assert data(kbc) == 0x00
    assert status(kbc) & 0x04  # system flag


def test_command_byte_read_write_and_status_cmd_bit():
    kbc, _ = make()
    cmd(kbc, 0x60)
    assert status(kbc) & 0x08  # last write was a command
    kbc.data_port.io_write(0, 1, 0x21)
    assert not status(kbc) & 0x08
    cmd(kbc, 0x20)
    assert data(kbc) == 0x21
    cmd(kbc, 0xAD)
    cmd(kbc, 0x20)
    assert data(kbc) == 0x31  # keyboard disabled bit
    cmd(kbc, 0xAE)
    cmd(kbc, 0x20)
    assert data(kbc) == 0x21


def test_output_port_a20_and_reset_bit():
    kbc, resets = make()
    cmd(kbc, 0xD0)
    assert data(kbc) & 0x03 == 0x03
    cmd(kbc, 0xD1)
    kbc.data_port.io_write(0, 1, 0x01)  # A20 off, reset inactive
    assert not kbc.a20
    assert resets == []
    cmd(kbc, 0xD1)
    kbc.data_port.io_write(0, 1, 0x02)  # bit 0 = 0: reset
    assert resets == [True]
    assert kbc.a20


def test_keyboard_reset_and_identify_answers():
    kbc, _ = make()
    kbc.data_port.io_write(0, 1, 0xFF)
    assert [data(kbc), data(kbc)] == [0xFA, 0xAA]
    kbc.data_port.io_write(0, 1, 0xF2)
    assert [data(kbc), data(kbc), data(kbc)] == [0xFA, 0xAB, 0x83]
    kbc.data_port.io_write(0, 1, 0xED)  # set LEDs takes an argument
    kbc.data_port.io_write(0, 1, 0x07)
    assert [data(kbc), data(kbc)] == [0xFA, 0xFA]
    assert not status(kbc) & 0x01


def test_state_round_trip():
    kbc, _ = make()
    cmd(kbc, 0xAA)
    state = json.loads(json.dumps(kbc.get_state()))
    other, _ = make()
    other.set_state(state)
    assert data(other) == 0x55


def test_port92_fast_reset_and_a20():
    resets = []
    port = SystemControlPortA(lambda: resets.append(True))
    assert port.io_read(0, 1) & 0x02
    port.io_write(0, 1, 0x00)
    assert not port.a20
    assert port.io_read(0, 1) == 0x00
    assert resets == []
    port.io_write(0, 1, 0x03)
    assert resets == [True]
    assert port.io_read(0, 1) == 0x02
