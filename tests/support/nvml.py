"""A stand-in for the pynvml module: the calls the exporter makes, answering as one GPU would.

No NVIDIA driver exists on the machines the tests run on; the real NVML is checked only where a GPU
is lent. ``unified=True`` answers like a GB10 (unified memory: no device memory figures)."""

from __future__ import annotations

from types import SimpleNamespace

GIB = 1 << 30

__all__ = ["GIB", "nvml_double"]


def nvml_double(*, unified: bool) -> SimpleNamespace:
    """The pynvml calls the exporter makes, answering as one GPU would (no NVIDIA driver here)."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's name)
        pass

    def memory_info(handle: str) -> SimpleNamespace:
        if unified:
            raise NVMLError_NotSupported("Not Supported")
        return SimpleNamespace(used=150 * GIB, total=180 * GIB, free=30 * GIB)

    return SimpleNamespace(
        NVMLError=NVMLError,
        NVMLError_NotSupported=NVMLError_NotSupported,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"handle{i}",
        nvmlDeviceGetUUID=lambda h: "GPU-1234",
        nvmlDeviceGetName=lambda h: b"NVIDIA GB10" if unified else "NVIDIA B200",
        nvmlDeviceGetMemoryInfo=memory_info,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            SimpleNamespace(pid=100, usedGpuMemory=2 * GIB),
            SimpleNamespace(pid=101, usedGpuMemory=40 * GIB),
            SimpleNamespace(pid=999, usedGpuMemory=None),
        ],
    )
