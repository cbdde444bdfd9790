"""Interrupts from the Python PIT/PIC reaching a KVM guest, and host-thread kicks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from kvm_guest import load_long_mode, load_real_mode, requires_kvm

from pyvmm.machine.stop import StopKind

pytestmark = requires_kvm

# Real mode: program the 8259 pair (vector base 0x20, only IRQ0 unmasked) and
# PIT channel 0 in mode 2 at ~1 kHz, then HLT until the IRQ0 handler (IVT
# entry 0x20) has counted 5 ticks; report the count on debugcon.
TIMER_GUEST = """
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7000
    mov word [0x20*4], irq0
    mov word [0x20*4+2], 0
    mov al, 0x11        ; ICW1: edge, cascade, ICW4 follows
    out 0x20, al
    out 0xa0, al
    mov al, 0x20        ; ICW2: master vectors 0x20-0x27
    out 0x21, al
    mov al, 0x28        ; slave vectors 0x28-0x2f
    out 0xa1, al
    mov al, 0x04        ; ICW3: slave on IR2
    out 0x21, al
    mov al, 0x02
    out 0xa1, al
    mov al, 0x01        ; ICW4: 8086 mode
    out 0x21, al
    out 0xa1, al
    mov al, 0xfe        ; OCW1: only IRQ0
    out 0x21, al
    mov al, 0xff
    out 0xa1, al
    mov al, 0x34        ; PIT: channel 0, lo/hi, mode 2
    out 0x43, al
    mov ax, 1193        ; 1193182 Hz / 1193 = ~1 kHz
    out 0x40, al
    mov al, ah
    out 0x40, al
    sti
halt_loop:
    hlt
    cmp byte [ticks], 5
    jb halt_loop
    cli
    mov al, [ticks]
    out 0xe9, al
    mov al, 0
    out 0xf4, al
irq0:
    inc byte [cs:ticks]
    push ax
    mov al, 0x20        ; OCW2: non-specific EOI
    out 0x20, al
    pop ax
    iret
ticks: db 0
"""


def test_pit_interrupts_reach_guest_handler(user_vm):
    load_real_mode(user_vm, TIMER_GUEST)
    start = time.monotonic()
    reason = user_vm.engine.run(timeout=10)
    elapsed = time.monotonic() - start
    assert reason.kind is StopKind.DEBUG_EXIT, reason.describe()
    assert user_vm.debugcon.getvalue() == bytes((5,))
    stats = user_vm.board.stats
    assert stats.get("interrupts", "external 0x20") == 5
    assert stats.total("interrupts") == 5
    assert stats.get("exits", "hlt") >= 5
    assert elapsed >= 0.004  # five ticks of ~0.84 ms each took real time


def test_post_from_host_thread_runs_promptly_in_a_spinning_guest(vm):
    load_long_mode(vm, "jmp $\n", ring=3)
    ran_on: list[threading.Thread] = []

    def poster() -> None:
        time.sleep(0.1)
        vm.board.events.post(lambda: ran_on.append(threading.current_thread()))
        time.sleep(0.1)
        vm.engine.request_pause()

    thread = threading.Thread(target=poster)
    thread.start()
    start = time.monotonic()
    reason = vm.engine.run(timeout=5)
    thread.join()
    assert reason.kind is StopKind.PAUSED
    assert time.monotonic() - start < 2
    assert ran_on == [threading.current_thread()]  # drained on the vCPU thread


def test_run_in_non_main_thread_with_default_sigusr1():
    """With SIGUSR1 at SIG_DFL and no way to install a handler (not the main
    thread), kicks must still only interrupt KVM_RUN, never kill the process."""
    script = (
        "import signal, sys, threading\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from kvm_guest import Vm, load_long_mode\n"
        "assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL\n"
        "out = []\n"
        "def body():\n"
        "    vm = Vm()\n"
        "    load_long_mode(vm, 'jmp $\\n', ring=3)\n"
        "    out.append(vm.engine.run(timeout=0.2).kind.name)\n"
        "    out.append(vm.engine.run(timeout=0.1).kind.name)\n"
        "    vm.close()\n"
        "t = threading.Thread(target=body); t.start(); t.join()\n"
        "assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL\n"
        "print(' '.join(out))\n"
    )
    here = os.path.dirname(__file__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.abspath(os.path.join(here, "..", "..", "..")), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script, here], capture_output=True,
                            text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["TIMEOUT", "TIMEOUT"]


def test_post_wakes_a_halted_guest(user_vm):
    from pyvmm.machine.stop import StopReason

    load_real_mode(user_vm, "sti\nhalt_here: hlt\njmp halt_here\n")

    def poster() -> None:
        time.sleep(0.1)
        board = user_vm.board
        board.events.post(lambda: board.request_stop(StopReason(StopKind.USER_QUIT)))

    start = time.monotonic()  # before the poster's 0.1 s sleep begins
    thread = threading.Thread(target=poster)
    thread.start()
    reason = user_vm.engine.run(timeout=5)
    thread.join()
    assert reason.kind is StopKind.USER_QUIT
    assert 0.1 <= time.monotonic() - start < 1.0
    assert user_vm.board.stats.get("exits", "hlt") == 1
