"""Find a ``tritonserver`` binary and build the environment it needs to run our repositories.

On a GPU node the binary comes from the NGC container (``tritonserver`` on PATH, backends in
``/opt/tritonserver/backends``). On a CPU machine it comes from the ``nvidia-pytriton`` wheel, which
ships Triton with the python backend only; that build needs a few things arranged by hand before it
loads a python model:

* a backend directory whose ``python/`` holds the wheel's python backend plus the stub built for
  the running Python version;
* ``LD_LIBRARY_PATH`` with the interpreter's own ``LIBDIR`` first, so the stub links the same
  libpython as the interpreter, then the wheel's bundled libraries;
* ``PATH`` with the virtual environment's ``bin/`` first, so the stub's embedded interpreter sees
  the environment's packages (numpy, transformers).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from generator.errors import RuntimeSetupError

__all__ = ["TritonInstall", "find_tritonserver", "remove_shm_regions", "shm_prefix_option"]


@dataclass(frozen=True)
class TritonInstall:
    """Where a tritonserver binary lives and how to run it."""

    binary: Path
    backend_dir: Path
    env: dict[str, str]
    source: str  # "pytriton wheel" or "PATH"

    def command(self, model_repository: Path, *extra: str) -> list[str]:
        return [
            str(self.binary),
            f"--model-repository={model_repository}",
            f"--backend-directory={self.backend_dir}",
            *extra,
        ]


def find_tritonserver(cache_dir: Path | None = None) -> TritonInstall:
    """Prefer the pytriton wheel (CPU, this interpreter); fall back to ``tritonserver`` on PATH."""
    wheel = _from_pytriton_wheel(cache_dir)
    if wheel is not None:
        return wheel
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(
            binary=Path(on_path),
            backend_dir=Path("/opt/tritonserver/backends"),
            env=dict(os.environ),
            source="PATH",
        )
    raise RuntimeSetupError(
        "no tritonserver found: install the CPU build with `pip install nvidia-pytriton` "
        "(make install does this), or run on a node where `tritonserver` is on PATH"
    )


def _from_pytriton_wheel(cache_dir: Path | None) -> TritonInstall | None:
    try:
        import pytriton
    except ImportError:
        return None
    server_root = Path(pytriton.__file__).parent / "tritonserver"
    binary = server_root / "bin" / "tritonserver"
    if not binary.exists():
        return None
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_root / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeSetupError(
            f"the nvidia-pytriton wheel has no python backend stub for Python {python_version}; "
            "use Python 3.8-3.13"
        )
    backend_dir = _assemble_backend_dir(server_root, stub, cache_dir)
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep the rendered repository exactly as rendered
    lib_path = [sysconfig.get_config_var("LIBDIR") or "", str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in lib_path if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return TritonInstall(binary=binary, backend_dir=backend_dir, env=env, source="pytriton wheel")


def _assemble_backend_dir(server_root: Path, stub: Path, cache_dir: Path | None) -> Path:
    """Copy the python backend and the matching stub into one folder, once per interpreter."""
    base = cache_dir or Path(sys.prefix) / "var" / "tritonstack"
    backend_dir = base / f"triton-backends-py{sys.version_info.major}{sys.version_info.minor}"
    python_dir = backend_dir / "python"
    wanted = [*sorted((server_root / "backends" / "python").glob("*.*")), stub]
    if all((python_dir / f.name).exists() for f in wanted):
        return backend_dir
    staging = backend_dir.with_name(backend_dir.name + f".tmp{os.getpid()}")
    (staging / "python").mkdir(parents=True, exist_ok=True)
    for source in wanted:
        shutil.copy2(source, staging / "python" / source.name)
    if backend_dir.exists():
        shutil.rmtree(backend_dir)
    staging.rename(backend_dir)
    return backend_dir


def shm_prefix_option(prefix: str) -> str:
    """The flag that names a server's python-backend shared-memory regions ``<prefix>…``: several
    servers on one host need their own names, and the names let :func:`remove_shm_regions` find them."""
    return f"--backend-config=python,shm-region-prefix-name={prefix}"


def remove_shm_regions(prefix: str) -> None:
    """Remove what a stopped server left in /dev/shm: a killed one never unlinks its regions."""
    for region in Path("/dev/shm").glob(f"{prefix}*"):
        region.unlink(missing_ok=True)
