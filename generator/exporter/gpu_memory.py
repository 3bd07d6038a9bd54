"""GPU memory through NVML, with the unified-memory fallback, and host memory pressure.

On discrete GPUs NVML's device counters give used/total. On unified-memory GPUs (DGX Spark GB10)
``nvmlDeviceGetMemoryInfo`` raises NotSupported: the GPU allocates from host memory, so the
exporter reports ``MemTotal - MemAvailable`` from /proc/meminfo instead, labelled
``source="meminfo"``, and publishes ``gpu_memory_reporting_supported 0`` — never a silent 0.
Per-process GPU bytes (``nvmlDeviceGetComputeRunningProcesses``) work
on both and attribute memory to tritonserver and its stubs.

The NVML module is an argument so tests can hand in a stand-in for hardware this machine lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from generator.errors import TritonstackError

__all__ = [
    "GpuReadError",
    "GpuDevice",
    "GpuReading",
    "Nvml",
    "MemInfo",
    "read_meminfo",
    "read_memory_pressure_seconds",
]

KIB = 1024


class GpuReadError(TritonstackError):
    """NVML was started but a query failed."""


@dataclass(frozen=True)
class GpuDevice:
    index: int
    uuid: str
    name: str
    used_bytes: int | None  # None: NVML cannot report device memory (unified memory)
    total_bytes: int | None


@dataclass
class GpuReading:
    devices: list[GpuDevice] = field(default_factory=list)
    process_bytes: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # pid → [(gpu index, bytes)]


class Nvml:
    """One NVML session for the exporter's lifetime: ``start()`` once, ``read()`` per scrape, ``stop()``."""

    def __init__(self, library: ModuleType | Any | None = None) -> None:
        self._library = library
        self._started = False

    @property
    def available(self) -> bool:
        return self._started

    def start(self) -> bool:
        """Initialise NVML; False (not an error) where there is no NVIDIA driver."""
        if self._library is None:
            try:
                import pynvml  # noqa: PLC0415  (nvidia-ml-py; loads libnvidia-ml lazily)
            except ImportError:
                return False
            self._library = pynvml
        try:
            self._library.nvmlInit()
        except self._library.NVMLError:
            return False
        self._started = True
        return True

    def stop(self) -> None:
        if self._started:
            self._started = False
            try:
                self._library.nvmlShutdown()
            except self._library.NVMLError:
                pass

    def read(self) -> GpuReading:
        nvml = self._library
        reading = GpuReading()
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                used, total = self._device_memory(handle)
                reading.devices.append(
                    GpuDevice(
                        index=index,
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        used_bytes=used,
                        total_bytes=total,
                    )
                )
                for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    used_by_process = process.usedGpuMemory
                    if used_by_process is None:  # NVML_VALUE_NOT_AVAILABLE (e.g. no permission)
                        continue
                    reading.process_bytes.setdefault(process.pid, []).append((index, int(used_by_process)))
        except nvml.NVMLError as exc:
            raise GpuReadError(f"NVML query failed: {exc}") from None
        return reading

    def _device_memory(self, handle: Any) -> tuple[int | None, int | None]:
        nvml = self._library
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError_NotSupported:
            return None, None
        return int(info.used), int(info.total)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class MemInfo:
    total_bytes: int
    available_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.total_bytes - self.available_bytes


def read_meminfo(path: Path = Path("/proc/meminfo")) -> MemInfo:
    fields: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            fields[key] = int(rest.split()[0]) * KIB
    if len(fields) != 2:
        raise GpuReadError(f"{path}: MemTotal or MemAvailable missing")
    return MemInfo(total_bytes=fields["MemTotal"], available_bytes=fields["MemAvailable"])


def read_memory_pressure_seconds(path: Path = Path("/proc/pressure/memory")) -> float | None:
    """Cumulative 'some' stall time in seconds; None where the kernel has no PSI."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for part in line.split()[1:]:
                if part.startswith("total="):
                    return int(part[len("total=") :]) / 1e6
    return None
