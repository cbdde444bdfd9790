"""The KVM engine: guest code runs on the host CPU through /dev/kvm."""

from pyvmm.engines.kvm.engine import KvmEngine

__all__ = ["KvmEngine"]
