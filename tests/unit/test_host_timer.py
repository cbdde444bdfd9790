"""HostTimerService: one thread, one armed wait for the earliest VM target."""

from __future__ import annotations

import threading
import time

import pytest

from pyvmm.machine.host_timer import STAT_HOST_WAKEUPS, STATS_CATEGORY, HostTimerService
from pyvmm.stats import Stats

MS = 1_000_000


@pytest.fixture
def service():
    svc = HostTimerService()
    yield svc
    svc.stop()


class Recorder:
    """A VM's wake callback: records the host time of each expiry."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self.event = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic_ns())
        self.event.set()


def test_expiries_go_to_their_own_vm_in_deadline_order(service):
    order: list[str] = []
    done = threading.Event()

    def waker(name: str):
        def wake() -> None:
            order.append(name)
            if len(order) == 3:
                done.set()
        return wake

    now = time.monotonic_ns()
    stats = {name: Stats() for name in "abc"}
    channels = {name: service.channel(waker(name), stats[name], name) for name in "abc"}
    channels["b"].set_target(now + 30 * MS)
    channels["a"].set_target(now + 60 * MS)
    channels["c"].set_target(now + 10 * MS)
    assert service.earliest() == now + 10 * MS
    assert done.wait(2.0)
    assert order == ["c", "b", "a"]
    for name in "abc":
        assert channels[name].kicks == 1
        assert stats[name].get(STATS_CATEGORY, STAT_HOST_WAKEUPS) == 1
        assert channels[name].target is None  # consumed; the VM arms the next one


def test_expiry_is_not_early_and_roughly_on_time(service):
    rec = Recorder()
    channel = service.channel(rec)
    target = time.monotonic_ns() + 40 * MS
    channel.set_target(target)
    assert rec.event.wait(2.0)
    assert rec.times[0] >= target
    assert rec.times[0] - target < 200 * MS


def test_an_earlier_target_rearms_the_single_wait(service):
    """A VM arming a deadline earlier than everything armed so far must not wait
    behind the old, later one."""
    late, early = Recorder(), Recorder()
    service.channel(late).set_target(time.monotonic_ns() + 5_000 * MS)
    time.sleep(0.02)  # the thread is now waiting for the 5 s target
    start = time.monotonic_ns()
    service.channel(early).set_target(start + 20 * MS)
    assert early.event.wait(1.0)
    assert early.times[0] - start < 500 * MS
    assert not late.times


def test_offer_only_lowers_and_set_target_replaces(service):
    rec = Recorder()
    channel = service.channel(rec)
    far = time.monotonic_ns() + 10_000 * MS
    channel.set_target(far)
    channel.offer(far + 1)
    assert channel.target == far
    channel.offer(far - 5)
    assert channel.target == far - 5
    channel.set_target(None)
    assert channel.target is None
    assert service.earliest() is None


def test_cleared_or_stopped_channels_get_no_expiry(service):
    cleared, stopped, live = Recorder(), Recorder(), Recorder()
    now = time.monotonic_ns()
    a = service.channel(cleared)
    b = service.channel(stopped)
    c = service.channel(live)
    a.set_target(now + 20 * MS)
    b.set_target(now + 20 * MS)
    c.set_target(now + 60 * MS)
    a.set_target(None)
    b.stop()
    b.offer(now)  # ignored after stop
    assert live.event.wait(2.0)
    assert not cleared.times and not stopped.times
    assert b not in service.channels


def test_one_thread_serves_many_vms(service):
    recs = [Recorder() for _ in range(20)]
    now = time.monotonic_ns()
    threads_before = threading.active_count()
    for i, rec in enumerate(recs):
        service.channel(rec).set_target(now + (5 + i) * MS)
    assert threading.active_count() == threads_before  # no thread per VM
    for rec in recs:
        assert rec.event.wait(2.0)
    assert all(len(rec.times) == 1 for rec in recs)
    # Expiries close together are delivered from few wake-ups of the one thread.
    assert 1 <= service.wakeups <= len(recs)


def test_wake_may_re_arm_from_the_callback(service):
    """An engine's kick runs on the service thread and may set a new target
    (e.g. a periodic timer); the service must not deadlock."""
    hits: list[int] = []
    done = threading.Event()
    holder = {}

    def wake() -> None:
        hits.append(time.monotonic_ns())
        if len(hits) < 3:
            holder["ch"].set_target(time.monotonic_ns() + 5 * MS)
        else:
            done.set()

    holder["ch"] = service.channel(wake)
    holder["ch"].set_target(time.monotonic_ns() + 5 * MS)
    assert done.wait(2.0)
    assert len(hits) == 3


def test_stop_ends_the_thread_and_refuses_new_channels():
    svc = HostTimerService()
    svc.channel(Recorder()).set_target(time.monotonic_ns() + 10_000 * MS)
    assert svc.running
    svc.stop()
    assert not svc.running
    with pytest.raises(RuntimeError):
        svc.channel(Recorder())


def test_an_absurd_target_neither_kills_the_thread_nor_starves_others(service):
    """A guest can ask for 2**64 ns (584 years, past threading.TIMEOUT_MAX):
    the wait is armed in bounded pieces and the service serves everyone else."""
    far, near = Recorder(), Recorder()
    service.channel(far, name="far").set_target(time.monotonic_ns() + 2**64)
    time.sleep(0.05)  # the service has armed its wait for the absurd target
    assert service.running
    service.channel(near, name="near").set_target(time.monotonic_ns() + 20 * MS)
    assert near.event.wait(2.0)
    assert service.running and far.times == []
    service.channels[0].set_target(time.monotonic_ns() + 2**200)  # beyond any float ns
    time.sleep(0.05)
    assert service.running


def test_a_raising_wake_callback_does_not_end_the_service(service):
    def broken() -> None:
        raise RuntimeError("a VM's wake failed")

    ok = Recorder()
    service.channel(broken).set_target(time.monotonic_ns() + MS)
    service.channel(ok).set_target(time.monotonic_ns() + 10 * MS)
    assert ok.event.wait(2.0)
    assert service.running and service.delivery_errors == 1


def test_wait_helpers_accept_any_length():
    from pyvmm.machine.host_timer import MAX_WAIT_SECONDS, wait_event, wait_seconds_until

    assert wait_seconds_until(10**30, 0) == MAX_WAIT_SECONDS
    assert wait_seconds_until(5, 10) == 0.0
    assert wait_seconds_until(1_500_000_000, 0) == 1.5
    event = threading.Event()
    threading.Timer(0.02, event.set).start()
    assert wait_event(event, float("inf"))
    assert not wait_event(threading.Event(), float("nan"))
    assert not wait_event(threading.Event(), 0.01)
