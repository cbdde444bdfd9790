"""The `vm` fixture for the KVM engine tests (helpers live in kvm_guest.py)."""

from __future__ import annotations

import pytest
from kvm_guest import Vm


@pytest.fixture
def vm():
    machine = Vm()
    yield machine
    machine.close()
