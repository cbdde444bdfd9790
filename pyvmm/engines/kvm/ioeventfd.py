"""Virtio off the KVM exit path: I/O threads, KVM_IOEVENTFD, interrupts from them.

Under the kvm engine every virtio device whose type allows it
(`VirtioDevice.iothread_safe`) is served on its own I/O thread
(pyvmm/devices/virtio/iothread.py), never on the vCPU thread; interp and jit
serve queues inline, deterministically (this module is the one place that
chooses otherwise).

- Notifications: each queue's notification register is registered with
  KVM_IOEVENTFD (KVM API, "KVM_IOEVENTFD") on that queue's eventfd: a guest
  write there signals the I/O thread inside KVM and the vCPU goes on without
  a VM exit.  virtio-mmio's QueueNotify is one register for every queue, so
  each queue's registration matches the value written (its index,
  KVM_IOEVENTFD_FLAG_DATAMATCH); virtio-pci gives each queue its own address
  in the notify region of BAR 4, re-registered whenever the guest moves or
  disables the BAR.  A write KVM does not match (another width, an unknown
  queue) still exits and reaches the transport, which hands it to the same
  thread.  `--no-ioeventfd` leaves every notification an exit (QEMU's
  ioeventfd=off).
- Interrupts: the transport's state (ISR, InterruptStatus) changes on the
  I/O thread under the device's lock; the wire (INTx, the virtio-mmio IRQ)
  is board state of the vCPU thread, so its change is posted there
  (HostEvents, which kicks the vCPU out of KVM_RUN: engines/kvm/kick.py).
  An MSI-X message under `--irqchip kernel` is sent from the I/O thread
  itself with KVM_SIGNAL_MSI (a VM ioctl, safe from any thread), so a
  completion costs the vCPU nothing; under `--irqchip user` the message is
  the board's local APIC's and is posted like a wire.
- `quiesce` (at the end of every run): pending notifications served,
  in-flight requests done, posted interrupt changes applied, so that a
  stopped VM is whole for snapshots and engine switches.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvmm.devices.virtio.iothread import IoThread
from pyvmm.devices.virtio.mmio import run_now
from pyvmm.engines.kvm import ioctls as k

if TYPE_CHECKING:
    from pyvmm.machine.board import Board

Action = Callable[[], None]


class VirtioOffload:
    """The I/O threads and ioeventfds of one KVM VM's virtio devices."""

    def __init__(self, vm_fd: int, board: Board, *, ioeventfd: bool, msi_direct: bool) -> None:
        self.vm_fd = vm_fd
        self.board = board
        self.ioeventfd = ioeventfd
        self.threads: list[IoThread] = []
        self._transports: list[tuple[Any, IoThread]] = []
        # transport id -> the kvm_ioeventfd structs registered for it
        self._registered: dict[int, list[k.kvm_ioeventfd]] = {}
        transports = getattr(board, "virtio_transports", lambda: [])()
        for name, transport in transports:
            device = transport.device
            if not device.iothread_safe:
                continue
            thread = IoThread(device, f"vm{getattr(board, 'vm_id', 0)}-{name}")
            self.threads.append(thread)
            self._transports.append((transport, thread))
            transport.post_line = self._on_vcpu_thread(device)
            if hasattr(transport, "post_msi"):
                transport.post_msi = run_now if msi_direct else self._on_vcpu_thread(device)
            if ioeventfd:
                self._register(transport, thread)
                if hasattr(transport, "on_notify_moved"):
                    transport.on_notify_moved = (
                        lambda t=transport, th=thread: self._register(t, th))

    def _on_vcpu_thread(self, device: Any) -> Callable[[Action], None]:  # noqa: ANN401
        events = self.board.events

        def post(action: Action) -> None:
            def locked() -> None:
                with device.lock:
                    action()
            events.post(locked)
        return post

    # -- KVM_IOEVENTFD ----------------------------------------------------------------
    def _register(self, transport: Any, thread: IoThread) -> None:  # noqa: ANN401
        """(Re-)register `transport`'s notification points on its queues' eventfds."""
        self._deassign(transport)
        done = []
        stats = self.board.stats
        for address, width, datamatch, queue in transport.notify_points():
            flags = 0 if datamatch is None else k.KVM_IOEVENTFD_FLAG_DATAMATCH
            request = k.kvm_ioeventfd(datamatch=datamatch or 0, addr=address, len=width,
                                      fd=thread.eventfds[queue], flags=flags)
            result, err = k.ioctl_raw(self.vm_fd, k.KVM_IOEVENTFD, request)
            if result < 0:  # the exit path still serves this queue
                stats.count("virtio", f"ioeventfd refused ({errno.errorcode.get(err, err)})")
                continue
            stats.count("virtio", "ioeventfd registered")
            done.append(request)
        self._registered[id(transport)] = done

    def _deassign(self, transport: Any) -> None:  # noqa: ANN401
        for request in self._registered.pop(id(transport), []):
            gone = k.kvm_ioeventfd.from_buffer_copy(request)
            gone.flags |= k.KVM_IOEVENTFD_FLAG_DEASSIGN
            if k.ioctl_raw(self.vm_fd, k.KVM_IOEVENTFD, gone)[0] < 0:
                self.board.stats.count("virtio", "ioeventfd deassign failed")

    # -- lifecycle ----------------------------------------------------------------------
    def quiesce(self) -> None:
        """No request in flight and every interrupt change applied (vCPU thread,
        the guest stopped)."""
        for thread in self.threads:
            thread.quiesce()
        self.board.events.drain()

    def close(self) -> None:
        for transport, thread in self._transports:
            self._deassign(transport)
            thread.close()
            transport.post_line = run_now
            if hasattr(transport, "post_msi"):
                transport.post_msi = run_now
            if hasattr(transport, "on_notify_moved"):
                transport.on_notify_moved = None
        self._transports = []
        self.threads = []
        self.board.events.drain()
