"""VirtualSwitch: bounded per-VM queues, drop-and-count, thread-safe send."""

import threading

import pytest

from pyvmm.paravirt.switch import SendStatus, VirtualSwitch


def test_datagram_goes_to_the_named_vm_only():
    switch = VirtualSwitch()
    notified = []
    for vm in (1, 2, 3):
        switch.attach(vm, lambda vm=vm: notified.append(vm))
    assert switch.send(1, 2, b"hello") is SendStatus.QUEUED
    assert notified == [2]
    assert switch.pending(2) == 1 and switch.pending(3) == 0
    assert switch.head_length(2) == 5
    datagram = switch.receive(2)
    assert datagram is not None and datagram.source == 1 and datagram.payload == b"hello"
    assert switch.receive(2) is None
    assert switch.counters(1).sent == 1 and switch.counters(2).received == 1


def test_fifo_order_and_overflow_drops_and_counts():
    switch = VirtualSwitch(queue_limit=3)
    switch.attach(1)
    switch.attach(2)
    results = [switch.send(1, 2, bytes([i])) for i in range(5)]
    assert results == [SendStatus.QUEUED] * 3 + [SendStatus.DROPPED] * 2
    assert switch.counters(2).dropped == 2
    assert [switch.receive(2).payload for _ in range(3)] == [b"\0", b"\1", b"\2"]
    assert switch.send(1, 2, b"again") is SendStatus.QUEUED  # room again


def test_unknown_destination_and_oversized_payload():
    switch = VirtualSwitch(max_payload=8)
    switch.attach(1)
    assert switch.send(1, 9, b"x") is SendStatus.UNREACHABLE
    assert switch.counters(1).unreachable == 1
    switch.attach(9)
    assert switch.send(1, 9, b"123456789") is SendStatus.TOO_BIG
    assert switch.pending(9) == 0


def test_attach_twice_is_refused_and_detach_frees_the_id():
    switch = VirtualSwitch()
    switch.attach(4)
    with pytest.raises(ValueError):
        switch.attach(4)
    switch.send(4, 4, b"self")
    switch.detach(4)
    assert not switch.is_attached(4) and switch.vm_ids == []
    switch.attach(4)
    assert switch.pending(4) == 0  # a new port starts empty


def test_concurrent_senders_lose_nothing_below_the_limit():
    switch = VirtualSwitch(queue_limit=10_000)
    switch.attach(0)
    for sender in range(1, 5):
        switch.attach(sender)

    def blast(sender):
        for i in range(1000):
            assert switch.send(sender, 0, sender.to_bytes(1, "little") + i.to_bytes(2, "little"))

    threads = [threading.Thread(target=blast, args=(s,)) for s in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = {}
    while (d := switch.receive(0)) is not None:
        got.setdefault(d.source, []).append(int.from_bytes(d.payload[1:], "little"))
    # every datagram arrived once, and each sender's datagrams in its order
    assert {s: seq for s, seq in got.items()} == {s: list(range(1000)) for s in range(1, 5)}
