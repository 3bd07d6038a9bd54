"""Resident memory of a tritonserver and its python backend stubs, attributed to Triton models.

The python backend runs every model instance in its own ``triton_python_backend_stub`` child whose
command line starts with the model file, ``<repository>/<model>/<version>/model.py``
(python_backend ``src/stub_launcher.cc``), so the stub's RSS belongs to that model. The C++
TensorRT-LLM backend runs inside ``tritonserver`` itself; its host memory shows up as the server's.
RSS does not include CUDA allocations on unified-memory GPUs; the
GPU part comes from NVML per-process figures (gpu_memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

import psutil

from generator.errors import TritonstackError

__all__ = ["STUB_NAME", "ProcessReadError", "ServerProcesses", "read_server_processes", "stub_model"]

STUB_NAME = "triton_python_backend_stub"


class ProcessReadError(TritonstackError):
    """The tritonserver process named in the config is gone or unreadable."""


@dataclass
class ServerProcesses:
    server_pid: int
    server_rss: int
    stub_rss: dict[str, int] = field(default_factory=dict)  # Triton model name → summed RSS
    stub_pids: dict[int, str] = field(default_factory=dict)  # stub PID → Triton model name


def stub_model(cmdline: list[str]) -> str | None:
    """The Triton model a stub serves, from its command line; None for any other process."""
    if len(cmdline) < 2 or PurePosixPath(cmdline[0]).name != STUB_NAME:
        return None
    model_file = PurePosixPath(cmdline[1])
    # <repository>/<model>/<version>/model.py
    return model_file.parent.parent.name or None


def read_server_processes(pid: int) -> ServerProcesses:
    try:
        server = psutil.Process(pid)
        result = ServerProcesses(server_pid=pid, server_rss=server.memory_info().rss)
        children = server.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
        raise ProcessReadError(f"tritonserver PID {pid}: {exc.__class__.__name__}") from None
    for child in children:
        try:
            model = stub_model(child.cmdline())
            if model is None:
                continue
            rss = child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # a stub that just exited (model unload) is not an error
        result.stub_rss[model] = result.stub_rss.get(model, 0) + rss
        result.stub_pids[child.pid] = model
    return result
