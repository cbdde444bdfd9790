"""The image-kind registry: every user of an image kind reads one table."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from pyvmm.boot import registry
from pyvmm.boot.registry import IMAGE_OPTIONS, LOADERS, BootInputs, Loader
from pyvmm.cpu.state import CpuState
from pyvmm.errors import ConfigError
from pyvmm.guests import BUNDLED_GUESTS, guest_path
from pyvmm.vm import ImageSpec, load_image


def test_every_bundled_guest_and_option_names_a_loader():
    assert {guest.kind for guest in BUNDLED_GUESTS.values()} <= set(LOADERS)
    assert {option.kind for option in IMAGE_OPTIONS} <= set(LOADERS)


def test_only_firmware_survives_a_reset():
    """Only a ROM entered at the reset vector can be re-entered (SDM Vol. 3A §9.1.1)."""
    assert [row.kind for row in LOADERS.values() if row.firmware] == ["bios"]


def test_cli_image_options_come_from_the_table():
    from pyvmm.cli import build_parser

    parser = build_parser()
    run = next(action for action in parser._actions
               if isinstance(action, argparse._SubParsersAction)).choices["run"]
    flags = {flag for action in run._actions for flag in action.option_strings}
    assert {option.flag for option in IMAGE_OPTIONS} <= flags


def test_hypervisor_keys_come_from_the_table(tmp_path):
    from pyvmm.guests import guest_path
    from pyvmm.hypervisor import configs_from_toml

    # The file is read when the configuration is; a multiboot kernel is a --kernel's.
    (tmp_path / "x.img").write_bytes(guest_path("demo").read_bytes())
    for option in IMAGE_OPTIONS:
        configs, _ = configs_from_toml(f'[[vm]]\n{option.key} = "x.img"\n', tmp_path)
        assert configs[0].image.kind == option.kind


def test_a_new_loader_is_one_row(monkeypatch, board):
    """A row added to LOADERS is what load_image dispatches to, with its inputs."""
    seen = []

    def load(board, data, inputs: BootInputs) -> CpuState:
        seen.append((data, inputs.cmdline))
        return CpuState()

    monkeypatch.setitem(LOADERS, "toy", Loader("toy", load, cmdline=True))
    spec = ImageSpec("toy", guest_path("hello"), "a=1")
    assert isinstance(load_image(board, spec), CpuState)
    assert seen == [(guest_path("hello").read_bytes(), "a=1")]


def test_an_unknown_kind_is_a_config_error(board):
    with pytest.raises(ConfigError, match="unknown image kind 'nope'"):
        load_image(board, ImageSpec("nope", guest_path("hello")))


def test_snapshots_record_only_known_kinds():
    from pyvmm.schema import StateError
    from pyvmm.snapshot import _IMAGE

    _IMAGE.check({"kind": "bios", "path": "/x"}, "image")
    with pytest.raises(StateError):
        _IMAGE.check({"kind": "floppy", "path": "/x"}, "image")


def test_rows_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.LOADERS["bios"].firmware = False  # type: ignore[misc]
