"""The Hypervisor: consoles, config files, the report, scheduling, the host timer."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from pyvmm.errors import ConfigError, ImageError
from pyvmm.guests import guest_path
from pyvmm.hypervisor import (
    Hypervisor,
    VmConfig,
    VmConsole,
    VmResult,
    combined_exit_status,
    configs_from_toml,
    format_report,
)
from pyvmm.machine.stop import StopKind, StopReason
from pyvmm.vm import ImageSpec, VirtualMachine
from tests.conftest import requires_kvm

MIB = 1 << 20
HELLO = b"Hello from a pyvmm boot sector!\r\n"


def spin_boot_sector(tmp_path: Path, name: str = "spin.bin") -> ImageSpec:
    """A 512-byte boot sector that spins with interrupts off: cli; jmp $."""
    image = bytearray(512)
    image[0:3] = b"\xfa\xeb\xfe"
    image[510:512] = b"\x55\xaa"  # boot signature
    path = tmp_path / name
    path.write_bytes(bytes(image))
    return ImageSpec("boot-sector", path, label=name)


def result(name: str, status_value: int | None, kind: StopKind = StopKind.DEBUG_EXIT):
    reason = StopReason(kind, "", status_value)
    return VmResult(name, "kvm", "g", reason, 0.5, 10, 3, 2)


# -- consoles --------------------------------------------------------------------
def test_prefixed_console_is_line_buffered_per_vm():
    out = io.BytesIO()
    lock = threading.Lock()
    a = VmConsole(out, b"[a] ", lock)
    b = VmConsole(out, b"[b] ", lock)
    for byte in b"one\ntw":
        a.write(bytes([byte]))
    b.write(b"x\n")
    a.write(b"o\nthree")
    a.close()
    assert out.getvalue() == b"[a] one\n[b] x\n[a] two\n[a] three\n"


def test_console_budget_drops_the_excess_and_reports_once():
    out = io.BytesIO()
    console = VmConsole(out, limit=10)
    calls = []
    console.on_limit = lambda: calls.append(1)
    console.write(b"12345678")
    console.write(b"abcd")
    console.write(b"more")
    assert out.getvalue() == b"12345678ab"
    assert console.written == 10
    assert console.dropped == 2 + 4
    assert calls == [1]


# -- exit status and report ------------------------------------------------------
def test_combined_exit_status():
    assert combined_exit_status([result("a", 33), result("b", 33)]) == 33
    assert combined_exit_status([result("a", 33), result("b", 33), result("c", 35),
                                 result("d", 6, StopKind.TRIPLE_FAULT)]) == 35
    assert combined_exit_status([result("a", None, StopKind.TIMEOUT), result("b", 33)]) == 33
    assert combined_exit_status([]) == StopKind.INTERNAL_ERROR.exit_code  # never "success"


def test_report_has_one_row_per_vm_with_every_column():
    text = format_report([result("web", 33), result("db", None, StopKind.TRIPLE_FAULT)])
    lines = text.splitlines()
    assert len(lines) == 3
    for column in ("vm", "engine", "guest", "status", "stop reason", "wall s", "exits",
                   "timer irqs", "host wake-ups"):
        assert column in lines[0]
    assert lines[1].split()[:4] == ["web", "kvm", "g", "33"]
    assert "triple fault" in lines[2] and lines[2].split()[3] == "6"


# -- configuration files -------------------------------------------------------------
def test_toml_mix_of_guests_engines_and_memory(tmp_path):
    # A file is read (and its kind detected) when the configuration is: a multiboot kernel.
    (tmp_path / "k.elf").write_bytes(guest_path("demo").read_bytes())
    configs, slice_seconds = configs_from_toml("""
[hypervisor]
timeout = 30
slice_ms = 5

[[vm]]
name = "web"
guest = "demo"
append = "work=3"
engine = "kvm"
memory = "32M"
console = "file:logs/{name}.log"
count = 2

[[vm]]
kernel = "k.elf"
engine = "interp"
memory = 8388608
timeout = 5
output_limit = "1K"
unmapped = "ignore"
""", tmp_path)
    assert slice_seconds == pytest.approx(0.005)
    assert [c.name for c in configs] == ["web1", "web2", "k.elf"]
    web1, web2, k = configs
    assert (web1.engine, web1.ram_size, web1.timeout) == ("kvm", 32 * MIB, 30.0)
    assert web1.image.label == "demo" and web1.image.cmdline == "work=3"
    assert web1.console == f"file:{tmp_path / 'logs/web1.log'}"
    assert web2.console == f"file:{tmp_path / 'logs/web2.log'}"
    assert k.image.kind == "multiboot" and k.image.path == tmp_path / "k.elf"
    assert (k.engine, k.ram_size, k.timeout, k.output_limit) == ("interp", 8 * MIB, 5.0, 1024)
    assert k.console == "stdout"
    assert (web1.unmapped, k.unmapped) == ("stop", "ignore")


@pytest.mark.parametrize("text, message", [
    ("", r"no \[\[vm\]\]"),
    ("[[vm]]\nguest = 'demo'\nengin = 'kvm'\n", "unknown key"),
    ("[[vm]]\nguest = 'demo'\nengine = 'qemu'\n", "unknown engine"),
    ("[[vm]]\nguest = 'demo'\nkernel = 'x'\n", "either guest"),
    ("[[vm]]\nguest = 'nope'\n", "unknown guest"),
    ("[[vm]]\nguest = 'demo'\nmemory = 'lots'\n", "invalid size"),
    ("[[vm]]\nguest = 'demo'\ncount = 2\nconsole = 'file:same.log'\n", "same file"),
    ("[[vm]\n", "invalid TOML"),
    ("[[vm]]\nguest = 'demo'\ntimeout = 'soon'\n", "positive number"),
    ("[[vm]]\nguest = 'demo'\ncount = 0\n", "count"),
    ("[hypervisor]\nslice_ms = -1\n[[vm]]\nguest = 'demo'\n", "positive number"),
    ("[[vm]]\nguest = 'demo'\nunmapped = 'maybe'\n", "unmapped must be"),
    ("vm = [1, 2]\n", r"\[\[vm\]\] tables, not values"),
    ("hypervisor = 5\n[[vm]]\nguest = 'demo'\n", r"\[hypervisor\] table"),
    ("[[vm]]\nguest = 'demo'\ncount = 100000000\n", "count must be 1 to 64"),
    ("[[vm]]\nguest = 'demo'\noutput_limit = '-1'\n", "invalid size"),
    ("[[vm]]\nguest = 'demo'\noutput_limit = -5\n", "invalid size"),
    ("[[vm]]\nguest = 'demo'\nmemory = 'infG'\n", "invalid size"),
    ("[[vm]]\nguest = 'demo'\ntimeout = inf\n", "positive number up to"),
    ("[[vm]]\nguest = 'demo'\ntimeout = nan\n", "positive number up to"),
    ("[[vm]]\nguest = 'demo'\ntimeout = 1e12\n", "positive number up to"),
    ("[[vm]]\nguest = 'demo'\ninitrd = 'x'\n", "initrd only applies to Linux kernels"),
    ("[[vm]]\nguest = 'demo'\nengine = 'kvm'\nirqchip = 'qemu'\n", "irqchip must be"),
    ("[[vm]]\nguest = 'demo'\nengine = 'jit'\nirqchip = 'user'\n", "irqchip is KVM's"),
    ("[[vm]]\nguest = 'demo'\nlinux_entry = 'real'\n", "linux_entry only applies to Linux"),
    ("[[vm]]\nguest = 'demo'\nlinux_entry = 'fast'\n", "linux_entry 'fast': expected one of"),
])
def test_toml_errors_are_one_line_config_errors(text, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        configs_from_toml(text, tmp_path)


def test_irqchip_per_vm_and_as_the_kvm_vms_default():
    configs, _ = configs_from_toml("[hypervisor]\nirqchip = 'user'\n"
                                   "[[vm]]\nguest = 'demo'\nengine = 'kvm'\n"
                                   "[[vm]]\nguest = 'demo'\nengine = 'kvm'\nirqchip = 'kernel'\n"
                                   "[[vm]]\nguest = 'demo'\nengine = 'jit'\n", Path("."))
    assert [c.irqchip for c in configs] == ["user", "kernel", None]


@requires_kvm
def test_the_demo_under_both_irqchips_in_one_hypervisor():
    """The board's PIT drives the demo under both (pyvmm/engines/kvm/engine.py),
    so the two VMs print the same; only their exits differ."""
    out = io.BytesIO()
    with Hypervisor(stdout=out) as hv:
        for chip in ("user", "kernel"):
            hv.add(VmConfig(chip, ImageSpec.bundled("demo"), engine="kvm", ram_size=8 * MIB,
                            timeout=120, irqchip=chip))
        results = hv.run()
    assert all(r.reason.kind is StopKind.DEBUG_EXIT for r in results), results
    lines = out.getvalue().decode().splitlines()
    user = [line.split("] ", 1)[1] for line in lines if line.startswith("[user] ")]
    kernel = [line.split("] ", 1)[1] for line in lines if line.startswith("[kernel] ")]
    assert user and user == kernel, (user, kernel)


def test_an_unreadable_image_is_reported_when_the_file_is_read(tmp_path):
    with pytest.raises(ImageError, match=r"\[\[vm\]\] #2: .*absent.bin: no such file"):
        configs_from_toml("[[vm]]\nguest = 'demo'\n[[vm]]\nkernel = 'absent.bin'\n", tmp_path)


def test_example_file_parses():
    root = Path(__file__).resolve().parents[2]
    configs, _ = configs_from_toml((root / "examples/hypervisor.toml").read_text(),
                                   root / "examples")
    assert len(configs) >= 3
    assert len({c.engine for c in configs}) >= 2
    assert len({c.ram_size for c in configs}) >= 2


# -- running: interpreter VMs are time-sliced -----------------------------------------
def solo_output(spec: ImageSpec, engine: str) -> bytes:
    out = io.BytesIO()
    vm = VirtualMachine(engine=engine, ram_size=16 * MIB, serial_output=out)
    try:
        vm.load(spec)
        assert vm.run(60).kind is StopKind.DEBUG_EXIT
    finally:
        vm.close()
    return out.getvalue()


def lines_of(stdout: bytes, name: str) -> bytes:
    prefix = f"[{name}] ".encode()
    return b"".join(line[len(prefix):] + b"\n" for line in stdout.splitlines()
                    if line.startswith(prefix))


def test_interp_vms_are_round_robin_and_resume_where_they_left_off():
    spec = ImageSpec.bundled("demo", "work=3")
    expected = solo_output(spec, "interp").replace(b"\r\n", b"\n")
    out = io.BytesIO()
    with Hypervisor(slice_seconds=0.002, stdout=out) as hv:
        for name in ("a", "b"):
            hv.add(VmConfig(name, spec, engine="interp", ram_size=16 * MIB, timeout=60))
        results = hv.run()
        turns = [h.turns for h in hv.vms]
    assert [r.exit_status for r in results] == [33, 33]
    assert all(t > 3 for t in turns), turns  # each VM ran in many slices...
    for name in ("a", "b"):  # ...and its output is exactly that of one uninterrupted run
        assert lines_of(out.getvalue(), name) == expected
    assert results[0].timer_interrupts > 0


def test_interp_spinner_is_stopped_by_its_own_timeout_alone(tmp_path):
    out = io.BytesIO()
    with Hypervisor(slice_seconds=0.01, stdout=out) as hv:
        hv.add(VmConfig("spin", spin_boot_sector(tmp_path), engine="interp", ram_size=2 * MIB,
                        timeout=0.5))
        hv.add(VmConfig("hello", ImageSpec.bundled("hello"), engine="interp",
                        ram_size=2 * MIB, timeout=30))
        spin, hello = hv.run()
    assert spin.reason.kind is StopKind.TIMEOUT
    assert 0.4 < spin.wall_seconds < 5
    assert hello.exit_status == 33
    assert lines_of(out.getvalue(), "hello") == HELLO.replace(b"\r\n", b"\n")


def test_stop_all_stops_every_vm(tmp_path):
    with Hypervisor(slice_seconds=0.01, stdout=io.BytesIO()) as hv:
        for name in ("x", "y"):
            hv.add(VmConfig(name, spin_boot_sector(tmp_path, f"{name}.bin"), engine="interp",
                            ram_size=2 * MIB))
        threading.Timer(0.3, hv.stop_all,
                        (StopReason(StopKind.USER_QUIT, "test"),)).start()
        results = hv.run()
    assert [r.reason.kind for r in results] == [StopKind.USER_QUIT, StopKind.USER_QUIT]


def test_an_engine_that_raises_leaves_an_internal_error_row(tmp_path, monkeypatch):
    """One VM's engine fails (a pyvmm bug): its row says so (status 10), and
    the other VM finishes."""
    with Hypervisor(slice_seconds=0.01, stdout=io.BytesIO()) as hv:
        broken = hv.add(VmConfig("broken", ImageSpec.bundled("hello"), engine="interp",
                                 ram_size=2 * MIB, timeout=30))
        hv.add(VmConfig("hello", ImageSpec.bundled("hello"), engine="interp",
                        ram_size=2 * MIB, timeout=30))

        def boom(timeout=None):  # noqa: ANN001, ANN202
            raise RuntimeError("engine bug")

        monkeypatch.setattr(broken.vm.engine, "run", boom)
        results = hv.run()
    assert [r.name for r in results] == ["broken", "hello"]
    assert results[0].exit_status == 10
    assert results[0].reason.message == "RuntimeError: engine bug"
    assert results[1].exit_status == 33
    assert "internal error: RuntimeError: engine bug" in format_report(results)


def test_a_crashed_scheduler_finishes_every_vm_it_had(tmp_path, monkeypatch):
    with Hypervisor(slice_seconds=0.01, stdout=io.BytesIO()) as hv:
        for name in ("x", "y"):
            hv.add(VmConfig(name, spin_boot_sector(tmp_path, f"{name}.bin"), engine="interp",
                            ram_size=2 * MIB, timeout=30))
        calls = []

        def crash(hosted):  # noqa: ANN001, ANN202
            calls.append(hosted.name)
            raise ZeroDivisionError("scheduler bug")

        monkeypatch.setattr(hv, "_turn", crash)
        results = hv.run()
    assert calls == ["x"]
    assert [(r.name, r.exit_status) for r in results] == [("x", 10), ("y", 10)]
    assert all(r.reason.message == "ZeroDivisionError: scheduler bug" for r in results)


@requires_kvm
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_vcpu_thread_that_dies_still_leaves_a_row(tmp_path, monkeypatch):
    """Even an exception the vCPU thread does not catch (here SystemExit,
    which ends only that thread) leaves the VM a row."""
    with Hypervisor(stdout=io.BytesIO()) as hv:
        dying = hv.add(VmConfig("dying", ImageSpec.bundled("hello"), engine="kvm",
                                ram_size=2 * MIB, timeout=30))
        hv.add(VmConfig("hello", ImageSpec.bundled("hello"), engine="kvm",
                        ram_size=2 * MIB, timeout=30))

        def die(timeout=None):  # noqa: ANN001, ANN202
            raise SystemExit

        monkeypatch.setattr(dying.vm, "run", die)
        results = hv.run()
    assert [(r.name, r.exit_status) for r in results] == [("dying", 10), ("hello", 33)]
    assert "without a result" in results[0].reason.message


def test_boards_get_ids_and_the_switch(tmp_path):
    from pyvmm.paravirt.switch import VirtualSwitch

    switch = VirtualSwitch()
    with Hypervisor(switch=switch, stdout=io.BytesIO()) as hv:
        a = hv.add(VmConfig("a", ImageSpec.bundled("hello"), engine="interp", ram_size=2 * MIB))
        b = hv.add(VmConfig("b", ImageSpec.bundled("hello"), engine="interp", ram_size=2 * MIB))
        assert (a.board.vm_id, b.board.vm_id) == (1, 2)
        assert a.board.switch is switch and b.board.switch is switch
        assert switch.is_attached(1) and switch.is_attached(2)
        assert a.board.memory is not b.board.memory
        assert a.board.pic is not b.board.pic and a.board.clock is not b.board.clock
        with pytest.raises(ConfigError, match="two VMs"):
            hv.add(VmConfig("a", ImageSpec.bundled("hello"), engine="interp"))


# -- running: KVM VMs get threads and share the one host timer --------------------------
def host_timer_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "pyvmm-host-timer")


@requires_kvm
def test_kvm_vms_share_one_host_timer_and_get_wakeups():
    out = io.BytesIO()
    before = host_timer_threads()
    with Hypervisor(stdout=out) as hv:
        for name in ("k1", "k2", "k3"):
            hosted = hv.add(VmConfig(name, ImageSpec.bundled("demo", "work=3"), engine="kvm",
                                     ram_size=16 * MIB, timeout=60))
            assert hosted.board.host_timer is hv.host_timer
            assert hosted.threaded
        assert host_timer_threads() == before + 1  # one thread for three VMs
        assert len(hv.host_timer.channels) == 3
        results = hv.run()
    assert [r.exit_status for r in results] == [33, 33, 33]
    for r in results:
        assert r.timer_interrupts >= 3  # the demo waits for PIT ticks
        assert r.host_wakeups >= 1  # ...which the one host timer woke it for
        assert r.exits > 0
    assert host_timer_threads() == before


@requires_kvm
def test_kvm_vcpus_run_in_parallel(tmp_path):
    """KVM_RUN releases the GIL: two spinning vCPUs with 1 s timeouts take ~1 s
    together, not 2 s."""
    with Hypervisor(stdout=io.BytesIO()) as hv:
        for name in ("s1", "s2"):
            hv.add(VmConfig(name, spin_boot_sector(tmp_path, f"{name}.bin"), engine="kvm",
                            ram_size=2 * MIB, timeout=1.0))
        start = time.monotonic()
        results = hv.run()
        elapsed = time.monotonic() - start
    assert [r.reason.kind for r in results] == [StopKind.TIMEOUT, StopKind.TIMEOUT]
    assert elapsed < 1.8, elapsed


@requires_kvm
def test_a_lone_kvm_vm_has_a_host_timer_of_its_own():
    vm = VirtualMachine(engine="kvm", ram_size=16 * MIB, serial_output=io.BytesIO())
    try:
        assert vm.board.host_timer is None
        assert host_timer_threads() >= 1
        vm.load(ImageSpec.bundled("demo", "work=2"))
        assert vm.run(60).exit_code == 33
        assert vm.stats.get("timer", "host wake-ups") >= 1
    finally:
        vm.close()


# -- the command line ------------------------------------------------------------------
@requires_kvm
def test_cli_run_vms_prints_each_vms_lines_and_a_report():
    from tests.conftest import run_pyvmm

    done = run_pyvmm("run", "--vms", "3", "--engine", "kvm", "hello", timeout=60)
    assert done.returncode == 33, done.stderr
    for name in ("vm1", "vm2", "vm3"):
        assert f"[{name}] ".encode() + HELLO.rstrip(b"\n") + b"\n" in done.stdout
    report = done.stderr.decode().splitlines()
    rows = [line.split() for line in report if line.startswith("vm")]
    assert [row[0] for row in rows[1:]] == ["vm1", "vm2", "vm3"]
    assert all(row[1:4] == ["kvm", "hello", "33"] for row in rows[1:])


@requires_kvm
def test_cli_run_vms_4_demo_exactly_as_the_issue_says():
    """`pyvmm run --vms 4 demo`: four demos, each prints its own summary, one
    report row each, and the run's status is the guests' 33."""
    import re

    from tests.conftest import run_pyvmm

    done = run_pyvmm("run", "--vms", "4", "demo", timeout=120)
    assert done.returncode == 33, done.stderr
    names = ("vm1", "vm2", "vm3", "vm4")
    summaries = {}
    for name in names:
        found = re.findall(rb"^\[" + name.encode() + rb"\] demo: ticks=\d+ switches=\d+ "
                           rb"(syscalls=\d+ page_faults=1 checksum=[0-9a-f]{16})\r?$",
                           done.stdout, re.M)
        assert len(found) == 1, done.stdout
        summaries[name] = found[0]
    # The timing-independent part of the summary is the same in every VM.
    assert len(set(summaries.values())) == 1, summaries
    rows = [line.split() for line in done.stderr.decode().splitlines()
            if line.startswith("vm")]
    assert rows[0][:4] == ["vm", "engine", "guest", "status"]
    assert [row[:4] for row in rows[1:]] == [[name, "kvm", "demo", "33"] for name in names]
    assert "host timer:" in done.stderr.decode().splitlines()[-1]


def test_cli_hypervisor_runs_a_toml_file(tmp_path):
    from tests.conftest import run_pyvmm

    config = tmp_path / "two.toml"
    config.write_text('[[vm]]\nname = "h"\nguest = "hello"\nengine = "interp"\n'
                      'memory = "2M"\ncount = 2\nconsole = "file:{name}.log"\n'
                      '[[vm]]\nname = "d"\nguest = "demo"\nappend = "work=2"\n'
                      'engine = "interp"\nmemory = "8M"\n')
    done = run_pyvmm("hypervisor", str(config), timeout=120)
    assert done.returncode == 33, done.stderr
    for name in ("h1", "h2"):
        assert (tmp_path / f"{name}.log").read_bytes() == HELLO
    assert b"[d] demo: cmdline work=2\r\n" in done.stdout
    assert b"[h" not in done.stdout
    names = [line.split()[0] for line in done.stderr.decode().splitlines()[1:4]]
    assert names == ["h1", "h2", "d"]


def test_cli_hypervisor_bad_file_is_a_usage_error(tmp_path):
    from tests.conftest import run_pyvmm

    config = tmp_path / "bad.toml"
    config.write_text("[[vm]]\nguest = 'demo'\nengine = 'nope'\n")
    done = run_pyvmm("hypervisor", str(config))
    assert done.returncode == 2
    assert b"unknown engine" in done.stderr
