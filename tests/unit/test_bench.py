"""The benchmark suite's logic that involves no timing (bench/).

Ratios, the n calibration (driven by a fake runner with synthetic times),
the JSON document, the PERFORMANCE.md update, the Bochs disk image and the
reasons a reference runner is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bochs, cli, runners, suite
from bench.results import (
    DOC_BEGIN,
    DOC_END,
    Measurement,
    RunnerInfo,
    Session,
    assign_ratios,
    format_markdown,
    format_text,
    parse_guest_output,
    update_doc,
)
from bench.runners import RunOutcome


def line(n: int, instructions: int, name: str = "bench-int") -> str:
    return f"{name}: n={n} instructions={instructions} reps=1 checksum=00ff\r\n"


def test_parse_guest_output() -> None:
    result = parse_guest_output("noise\r\n" + line(12, 189))
    assert result is not None
    assert (result.name, result.n, result.instructions, result.reps) == ("bench-int", 12, 189, 1)
    assert parse_guest_output("bench-int: exception 13 at ...") is None


def test_mips_subtracts_the_fixed_cost() -> None:
    m = Measurement("mem", "kvm", ok=True, n=1000, instructions=5_000 + 200_000,
                    startup_instructions=200_000, wall_seconds=1.5, startup_seconds=0.5)
    assert m.loop_seconds == pytest.approx(1.0)
    assert m.mips == pytest.approx(5_000 / 1.0 / 1e6)
    assert m.raw_mips == pytest.approx(205_000 / 1.5 / 1e6)
    assert m.iterations_per_second == pytest.approx(1000.0)
    assert Measurement("mem", "kvm", ok=False).mips is None


def test_exits_per_second() -> None:
    m = Measurement("io", "kvm", ok=True, n=10, instructions=44, wall_seconds=2.0, exits=500)
    assert m.exits_per_second == 250.0
    assert Measurement("io", "interp", ok=True, n=10, instructions=44,
                       wall_seconds=2.0).exits_per_second is None


def measurement(bench: str, runner: str, mips: float | None) -> Measurement:
    if mips is None:
        return Measurement(bench, runner, ok=False, error="boom")
    return Measurement(bench, runner, ok=True, n=1, instructions=int(mips * 1e6),
                       wall_seconds=1.0, startup_seconds=0.0)


KINDS = {"kvm": "pyvmm", "interp": "pyvmm", "qemu-tcg": "reference",
         "qemu-kvm": "reference", "bochs": "reference"}


def test_ratios_are_against_the_fastest_reference_not_the_fastest_runner() -> None:
    rows = [measurement("int", "kvm", 3000), measurement("int", "interp", 3),
            measurement("int", "qemu-tcg", 1500), measurement("int", "bochs", 150),
            measurement("int", "qemu-kvm", None)]
    bases = assign_ratios(rows, KINDS)
    assert bases == {"int": "qemu-tcg"}
    ratios = {m.runner: m.ratio for m in rows}
    assert ratios["kvm"] == pytest.approx(2.0)
    assert ratios["interp"] == pytest.approx(0.002)
    assert ratios["qemu-tcg"] == pytest.approx(1.0)
    assert ratios["bochs"] == pytest.approx(0.1)
    assert ratios["qemu-kvm"] is None


def test_ratios_are_per_benchmark_and_fall_back_without_references() -> None:
    rows = [measurement("int", "qemu-kvm", 100), measurement("int", "kvm", 50),
            measurement("io", "kvm", 4), measurement("io", "interp", 1),
            measurement("sys", "kvm", None)]
    bases = assign_ratios(rows, KINDS)
    assert bases == {"int": "qemu-kvm", "io": "kvm", "sys": None}
    assert [m.ratio for m in rows] == pytest.approx([1.0, 0.5, 1.0, 0.25, None])


def test_plan_next() -> None:
    assert suite.plan_next(1000, 2.5, 2.0) == ("accept", 1000)
    assert suite.plan_next(1000, 1.0, 2.0) == ("accept", 1000)
    assert suite.plan_next(1000, 0.5, 2.0) == ("final", 4000)
    assert suite.plan_next(1000, 10.0, 2.0) == ("final", 200)
    assert suite.plan_next(1000, 0.01, 2.0) == ("probe", 100_000)  # growth capped
    assert suite.plan_next(1000, 0.1, 2.0) == ("probe", 20_000)
    assert suite.plan_next(1000, -0.2, 2.0) == ("probe", 100_000)  # noise: negative loop
    assert suite.plan_next(3, 0.39, 2.0) == ("probe", 16)           # rounds up
    assert suite.plan_next(suite.N_MAX, 0.0, 2.0)[1] == suite.N_MAX


class FakeRunner:
    """A runner whose wall time is startup + n * per_iteration, and a K=15 guest."""

    kind = "reference"

    def __init__(self, startup: float, per_iteration: float, fail_at: int | None = None):
        self.name = "fake"
        self.startup, self.per_iteration, self.fail_at = startup, per_iteration, fail_at
        self.calls: list[int] = []

    def availability(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        return "fake 1.0"

    def run(self, image: Path, cmdline: str, timeout: float) -> RunOutcome:
        n = int(cmdline.removeprefix("n="))
        self.calls.append(n)
        wall = self.startup + n * self.per_iteration
        if n == self.fail_at:
            return RunOutcome(wall, "bench-int: exception 13\r\n", 35, error="exit status 35")
        return RunOutcome(wall, line(n, 15 * n + 9), 33)


def test_measure_calibrates_n_to_the_target() -> None:
    runner = FakeRunner(startup=0.5, per_iteration=1e-6)
    m = suite.measure(runner, "int", Path("x.elf"), target=2.0, timeout=10)
    assert m.ok and m.error == ""
    assert runner.calls[:3] == [0, 0, suite.START_N["int"]]
    assert 1.0 <= m.loop_seconds <= 4.0
    assert m.instructions == 15 * m.n + 9 and m.startup_instructions == 9
    assert m.mips == pytest.approx(15.0)  # 15 instructions per microsecond


def test_measure_startup_multiple_lengthens_the_loop() -> None:
    runner = FakeRunner(startup=4.0, per_iteration=1e-6)
    m = suite.measure(runner, "int", Path("x.elf"), target=2.0, timeout=10,
                      startup_multiple=3.0)
    assert m.loop_seconds >= 6.0


def test_measure_reports_a_failing_guest() -> None:
    runner = FakeRunner(startup=0.1, per_iteration=1e-6, fail_at=suite.START_N["int"])
    m = suite.measure(runner, "int", Path("x.elf"), target=2.0, timeout=10)
    assert not m.ok and m.error == "exit status 35" and m.n == suite.START_N["int"]
    assert m.mips is None


def test_check_run_rejects_a_wrong_n_and_a_missing_line() -> None:
    assert suite.check_run(RunOutcome(1.0, line(5, 84), 33), 6)[1] == \
        "the guest ran n=5, asked for n=6"
    assert suite.check_run(RunOutcome(1.0, "garbage", 33), 6)[0] is None
    assert suite.check_run(RunOutcome(1.0, line(6, 99), 33), 6)[0] is not None


def session() -> Session:
    runners_ = [RunnerInfo("kvm", "pyvmm", True), RunnerInfo("interp", "pyvmm", True),
                RunnerInfo("qemu-tcg", "reference", True, version="QEMU 7.2"),
                RunnerInfo("bochs", "reference", False, "bochs not installed (Debian: ...)")]
    s = Session("python -m bench --only int", {"cpu_model": "Test CPU", "cores": 2,
                                               "date": "2026-01-01T00:00:00+00:00"},
                {"target_seconds": 2.0}, runners_,
                [measurement("int", "kvm", 3000), measurement("int", "interp", None),
                 measurement("int", "qemu-tcg", 1000)])
    s.finish()
    return s


def test_json_document_shape() -> None:
    data = json.loads(json.dumps(session().to_json()))
    assert data["schema"] == "pyvmm-bench/1"
    assert data["command"] == "python -m bench --only int"
    assert data["machine"]["cpu_model"] == "Test CPU"
    assert data["ratio_base"] == {"int": "qemu-tcg"}
    assert [r["name"] for r in data["runners"]] == ["kvm", "interp", "qemu-tcg", "bochs"]
    assert data["runners"][3]["available"] is False
    assert "not installed" in data["runners"][3]["reason"]
    kvm, interp, _ = data["results"]
    assert kvm["ratio"] == pytest.approx(3.0) and kvm["mips"] == pytest.approx(3000)
    assert {"bench", "runner", "ok", "n", "instructions", "wall_seconds", "startup_seconds",
            "loop_seconds", "raw_mips", "exits", "exits_per_second"} <= set(kvm)
    assert interp["ok"] is False and interp["error"] == "boom" and interp["mips"] is None


def test_json_round_trip() -> None:
    original = session()
    again = Session.from_json(json.loads(json.dumps(original.to_json())))
    assert again.to_json() == original.to_json()
    with pytest.raises(ValueError, match="not a pyvmm-bench/1 document"):
        Session.from_json({"schema": "other"})


def test_tables_show_ratios_failures_and_skips() -> None:
    text = format_text(session())
    assert "3x" in text and "1x (base)" in text and "failed: boom" in text
    assert "skipped bochs: bochs not installed" in text
    markdown = format_markdown(session())
    assert "python -m bench --only int" in markdown and "Test CPU, 2 cores" in markdown
    assert "| int | kvm |" in markdown
    assert "- skipped `bochs`" in markdown


def test_update_doc_creates_replaces_and_keeps_other_sections() -> None:
    fresh = update_doc(None, "TABLE 1\n")
    assert fresh.startswith("# Performance")
    assert f"{DOC_BEGIN}\nTABLE 1\n{DOC_END}" in fresh
    assert "## Where the interpreter's time goes" in fresh
    edited = fresh.replace("(Nothing measured here yet.)", "Someone's profile.")
    again = update_doc(edited, "TABLE 2\n")
    assert "TABLE 2" in again and "TABLE 1" not in again
    assert "Someone's profile." in again
    assert update_doc(again, "TABLE 2\n") == again
    appended = update_doc("# Perf\n\nnotes\n", "T\n")
    assert appended.startswith("# Perf\n\nnotes\n") and appended.endswith(f"T\n{DOC_END}\n")


def test_bochs_disk_image_layout() -> None:
    loader = bytes(510) + b"\x55\xaa"
    kernel = b"\x7fELF" + bytes(5000)
    image = bochs.disk_image(loader, "n=42", kernel)
    assert image[:512] == loader
    assert image[512:517] == b"n=42\0"
    assert image[1024:1024 + len(kernel)] == kernel
    assert len(image) % bochs.CYLINDER_BYTES == 0
    assert len(image) >= (bochs.LOADER_SECTORS + 1) * 512  # the loader may read that far
    with pytest.raises(ValueError):
        bochs.disk_image(bytes(512), "n=1", kernel)
    with pytest.raises(ValueError):
        bochs.disk_image(loader, "x" * 600, kernel)
    with pytest.raises(ValueError):
        bochs.disk_image(loader, "n=1", bytes(bochs.LOADER_SECTORS * 512))


def test_skip_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runners.shutil, "which", lambda _name: None)
    ok, reason = runners.QemuRunner("tcg").availability()
    assert not ok and "qemu-system-x86_64 not installed" in reason
    ok, reason = bochs.BochsRunner().availability()
    assert not ok and "bochs not installed" in reason
    monkeypatch.setattr(runners.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(runners.os.path, "exists", lambda _path: False)
    ok, reason = runners.QemuRunner("kvm").availability()
    assert not ok and "no /dev/kvm" in reason
    assert runners.QemuRunner("tcg").availability() == (True, "")


def test_qemu_command_line() -> None:
    command = runners.QemuRunner("kvm").command(Path("/g/bench-io.elf"), "n=5")
    assert command[:5] == ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "qemu64"]
    joined = " ".join(command)
    for part in ("-kernel /g/bench-io.elf", "-append n=5", "-serial stdio", "-display none",
                 "-device isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"):
        assert part in joined


def test_cli_filters() -> None:
    names = cli.all_runner_names()
    assert {"kvm", "interp", "qemu-tcg", "qemu-kvm", "bochs"} <= set(names)
    assert cli.split_list("io, int", ["int", "mem", "sys", "io"], "benchmark") == ["io", "int"]
    assert cli.split_list(None, ["int", "io"], "benchmark") == ["int", "io"]
    with pytest.raises(SystemExit, match="unknown benchmark"):
        cli.split_list("int,fpu", ["int", "io"], "benchmark")
    assert isinstance(cli.make_runner("bochs"), bochs.BochsRunner)
    assert cli.make_runner("qemu-tcg").name == "qemu-tcg"
    assert cli.make_runner("interp").kind == "pyvmm"
