"""`pyvmm compare`: one guest under every engine, the verdict, the JSON and the plot.

The JSON is validated against docs/compare-schema.json.
"""

from __future__ import annotations

import json
import os
import re

import jsonschema
import pytest

from pyvmm import compare
from pyvmm.engines.registry import engine_availability
from pyvmm.vm import ImageSpec
from tests.conftest import ROOT, run_pyvmm

SCHEMA = json.loads((ROOT / "docs" / "compare-schema.json").read_text())
AVAILABLE = [name for name in ("interp", "kvm", "jit") if engine_availability(name)[0]]
needs_two = pytest.mark.skipif(len(AVAILABLE) < 2 or "interp" not in AVAILABLE,
                               reason=f"needs interp and another engine; have {AVAILABLE}")


@needs_two
def test_compare_demo_same_behaviour_and_json_validates(tmp_path):
    out, png = tmp_path / "compare.json", tmp_path / "compare.png"
    result = run_pyvmm("compare", "--json", str(out), "--plot", str(png),
                       "--append", "work=3", "demo", timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["reference_engine"] == "interp"
    engines = {entry["engine"]: entry for entry in data["engines"]}
    for name in AVAILABLE:
        entry = engines[name]
        assert entry["available"] and entry["same_output"] and entry["same_exit_status"]
        assert entry["exit_status"] == 33
    interp = engines["interp"]["counters"]
    # Each hardware interrupt is counted once: work=3 means 4 timer ticks.
    assert sum(interp["interrupts"].values()) == interp["interrupts"]["external 0x20"] == 4
    assert interp["software interrupts"]["int 0x80"] == 2 * (3 + 3)  # guests/README.md
    if "kvm" in engines:
        assert "exits" in engines["kvm"]["counters"]
        assert "software interrupts" not in engines["kvm"]["counters"]  # KVM cannot see them
    table = result.stdout.decode()
    assert "same output as interp" in table and "port accesses" in table
    assert "compare: running demo under interp" in result.stderr.decode()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_two
def test_a_different_output_is_reported(monkeypatch, capsys):
    """The verdict must be able to say "no" (a mutated run for the second engine)."""
    real = compare.run_engine

    def tampered(engine, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        run = real(engine, *args, **kwargs)
        if engine != "interp":
            run.output += b"!"
        return run

    monkeypatch.setattr(compare, "run_engine", tampered)
    runs = compare.compare(ImageSpec.bundled("hello"), AVAILABLE[:2], 16 << 20, 60)
    data = compare.to_json(ImageSpec.bundled("hello"), runs)
    assert [e["same_output"] for e in data["engines"]] == [True, False]
    assert "no" in compare.format_table(ImageSpec.bundled("hello"), runs).split(
        "same output as interp")[1].splitlines()[0]


def test_unavailable_engine_is_listed_with_its_reason(monkeypatch):
    monkeypatch.setattr(compare, "engine_availability",
                        lambda name: (False, f"{name} is switched off for this test"))
    runs = compare.compare(ImageSpec.bundled("hello"), ["kvm"], 16 << 20, 10)
    data = compare.to_json(ImageSpec.bundled("hello"), runs)
    jsonschema.validate(data, SCHEMA)
    assert data["engines"] == [{"engine": "kvm", "cmdline": "", "column": "kvm",
                                "available": False,
                                "reason": "kvm is switched off for this test"}]
    assert "no: kvm is switched off" in compare.format_table(ImageSpec.bundled("hello"), runs)


@pytest.mark.skipif(not AVAILABLE, reason="no engine can run here")
def test_json_to_stdout_is_machine_readable():
    result = run_pyvmm("compare", "--engines", AVAILABLE[0], "--json", "-", "hello")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)


def test_schema_rejects_missing_fields():
    good = {"schema_version": compare.SCHEMA_VERSION, "guest": "x", "cmdline": "",
            "cmdlines": [""], "reference_engine": None,
            "engines": [{"engine": "kvm", "cmdline": "", "column": "kvm", "available": False,
                         "reason": "off"}]}
    jsonschema.validate(good, SCHEMA)
    # An available entry without its results, and an entry without its cmdline.
    bad = {**good, "engines": [{"engine": "kvm", "cmdline": "", "column": "kvm",
                                "available": True}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = {**good, "engines": [{"engine": "kvm", "column": "kvm", "available": False,
                                "reason": "off"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


@pytest.mark.parametrize("args, message", [
    (["--engines", "interp,warp"], "unknown engine(s) warp"),
    (["--engines", ","], "--engines names no engine"),
    (["--json", "/nonexistent/dir/x.json"], "no such directory"),
    (["--plot", "out.txt"], "must end in .png"),
    (["--append", "x", "--append", "x"], "the same command line is given twice"),
])
def test_bad_options_fail_before_running(args, message):
    result = run_pyvmm("compare", *args, "hello")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/kvm") or "kvm" not in AVAILABLE,
                    reason="needs /dev/kvm and the kvm engine")
def test_pv_and_emulated_side_by_side_under_kvm(tmp_path):
    """One column per command line: the demo with emulated devices and with
    `pv` print different timer lines (each is compared only with runs of its
    own command line) and the PV column has far fewer exits."""
    out = tmp_path / "pv.json"
    result = run_pyvmm("compare", "--engines", "kvm", "--append", "work=2",
                       "--append", "work=2 pv", "--json", str(out), "demo", timeout=300)
    assert result.returncode == 0, result.stderr
    table = result.stdout.decode().splitlines()
    assert table[0] == "guest: demo  cmdlines: 'work=2', 'work=2 pv'"
    assert re.fullmatch(r"\s+kvm \[work=2\]\s+kvm \[work=2 pv\]", table[1]), table[1]
    exits_row = next(line for line in table if line.startswith("VM exits (total)"))
    emulated, pv = (int(cell) for cell in exits_row.split()[-2:])
    assert pv * 3 <= emulated, exits_row
    data = json.loads(out.read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["cmdlines"] == ["work=2", "work=2 pv"]
    first, second = data["engines"]
    assert (first["cmdline"], second["cmdline"]) == ("work=2", "work=2 pv")
    assert (first["column"], second["column"]) == ("kvm [work=2]", "kvm [work=2 pv]")
    assert second["reference_column"] == "kvm [work=2 pv]" and second["same_output"]
    assert sum(second["counters"]["exits"].values()) == pv
    assert second["counters"]["hypercalls"]["timer-start"] == 1


@pytest.mark.skipif("interp" not in AVAILABLE, reason="needs the interp engine")
def test_each_column_is_checked_against_its_own_cmdline():
    """Different command lines legitimately print different things: the
    verdict compares interp [a] with interp [a] only.  A tampered second run
    of the same command line is still caught."""
    spec = ImageSpec.bundled("demo")
    runs = compare.compare(spec, ["interp", "interp"], 16 << 20, 60,
                           cmdlines=["work=1", "work=1 pv"])
    assert [run.column for run in runs] == ["interp [work=1]", "interp [work=1 pv]"] * 2
    assert runs[0].output != runs[1].output  # the timer line differs
    assert compare.same_behaviour(runs)
    data = compare.to_json(spec, runs)
    jsonschema.validate(data, SCHEMA)
    assert [e["same_output"] for e in data["engines"]] == [True] * 4
    runs[3].output += b"!"
    assert not compare.same_behaviour(runs)
    assert [e["same_output"] for e in compare.to_json(spec, runs)["engines"]] == \
        [True, True, True, False]
    row = next(line for line in compare.format_table(spec, runs).splitlines()
               if line.startswith("same output as first column with its cmdline"))
    assert row.split()[-4:] == ["yes", "yes", "yes", "no"]
