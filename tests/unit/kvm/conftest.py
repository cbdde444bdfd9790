"""The `vm` fixtures for the KVM engine tests (helpers live in kvm_guest.py): `vm`
with kvm's default --irqchip kernel, `user_vm` with --irqchip user (the board's
PIC injected through KVM_INTERRUPT, HLT as an exit)."""

from __future__ import annotations

import pytest
from kvm_guest import Vm


@pytest.fixture
def vm():
    machine = Vm()
    yield machine
    machine.close()


@pytest.fixture
def user_vm():
    machine = Vm(irqchip="user")
    yield machine
    machine.close()
