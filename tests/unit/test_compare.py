"""`pyvmm compare`: the JSON it writes validates against docs/compare-schema.json."""

from __future__ import annotations

import json

import jsonschema
import pytest

from pyvmm.engines.registry import engine_availability
from tests.conftest import ROOT, run_pyvmm

SCHEMA = json.loads((ROOT / "docs" / "compare-schema.json").read_text())
AVAILABLE = [name for name in ("interp", "kvm") if engine_availability(name)[0]]


@pytest.mark.skipif(not AVAILABLE, reason="neither the interp nor the kvm engine can run here")
def test_compare_hello_json_validates(tmp_path):
    out = tmp_path / "compare.json"
    result = run_pyvmm("compare", "--json", str(out), "hello", timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    jsonschema.validate(data, SCHEMA)
    engines = {entry["engine"]: entry for entry in data["engines"]}
    for name in AVAILABLE:
        assert engines[name]["available"] is True
        assert engines[name]["same_output"] is True
        assert engines[name]["exit_status"] == 33
    table = result.stdout.decode()
    assert "same output as" in table and "port accesses" in table


def test_schema_rejects_missing_fields():
    bad = {"schema_version": 1, "guest": "x", "cmdline": "", "reference_engine": None,
           "engines": [{"engine": "kvm", "available": True}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_unknown_engine_in_list():
    result = run_pyvmm("compare", "--engines", "interp,warp", "hello")
    assert result.returncode == 2
    assert b"unknown engine(s) warp" in result.stderr
