"""A short soak (bench/soak.py): several VMs of mixed guests and engines in one
hypervisor, every console line accounted for and every VM stopped by its guest."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.soak import LineCounter, expected_lines, slope_kib_per_minute
from tests.conftest import ROOT


def test_short_soak_loses_no_output_and_every_vm_exits(tmp_path):
    out, png = tmp_path / "soak.json", tmp_path / "soak.png"
    result = subprocess.run([sys.executable, "-m", "bench.soak", "--vms", "4", "--minutes",
                             "0.01", "--json", str(out), "--plot", str(png)],
                            capture_output=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    data = json.loads(out.read_text())
    records = data["records"]
    assert data["rounds"] >= 1 and len(records) == 4 * data["rounds"]
    assert data["lost_lines"] == 0 and data["extra_lines"] == 0
    for record in records:
        assert record["lines_received"] == record["lines_expected"] > 0, record
        assert record["status"] == 33, record  # the guest's own debug-exit
        assert record["reason"] == "debug-exit with status 33", record
    assert len({(r["guest"], r["engine"]) for r in records}) == min(4, len(records))
    assert all(rss > 0 for _, rss in data["samples"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Traceback" not in result.stderr


def test_line_counter_joins_lines_split_across_writes():
    counter = LineCounter()
    for chunk in (b"[vm1] a\n[vm", b"2] b", b"\n[vm1] c\n[vm1] partial"):
        counter.write(chunk)
    assert counter.lines == {"vm1": 2, "vm2": 1}


def test_expected_lines_follow_the_guests_documented_output():
    assert expected_lines("hello", "") == 1
    assert expected_lines("demo", "work=2") == 13  # demo_model: 13 lines whatever work=
    assert expected_lines("demo", "work=20 pv") == 13


def test_slope_is_a_least_squares_fit():
    assert slope_kib_per_minute([(0.0, 100), (60.0, 160), (120.0, 220)]) == 60.0
    assert slope_kib_per_minute([(0.0, 100)]) is None
