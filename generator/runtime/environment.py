"""What this machine has for running a stack, checked before anything starts.

``tritonstack up`` and ``tritonstack doctor`` share these checks. Each returns a :class:`Finding`
that says what was found and, when something is wrong or missing, the command that mends it. A
finding that ``up`` needs (``needed_by_up``) and is not ok stops ``up`` before it starts a process:
a stack that crashes on its first request (numpy 2 under the CPU python backend) or halfway
through its start (a port in use, /dev/shm full) is worse than a refusal that says what to do.

Every check takes what it inspects as arguments (versions, paths, free bytes), so tests need not
change the machine; the ``installed_*``/``find_*`` helpers read the real values.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PYTRITON_DISTRIBUTION",
    "Finding",
    "check_numpy",
    "check_ports",
    "check_python_stub",
    "check_shared_memory",
    "check_tool",
    "check_tritonserver",
    "installed_numpy",
    "preflight",
    "python_stub_count",
    "required_numpy",
    "tritonserver_version",
]

PYTRITON_DISTRIBUTION = "nvidia-pytriton"
# Each python-model instance (one stub process) maps its own shared-memory region in /dev/shm and
# grows it while tensors pass through; this allowance per stub keeps a stack's start from failing
# halfway with "Failed to increase the shared memory pool size". Docker's default /dev/shm (64 MiB)
# is what usually falls short.
SHM_BYTES_PER_STUB = 4 << 20
_PIP = f"{sys.executable} -m pip install"


@dataclass(frozen=True)
class Finding:
    """One thing checked: its name, whether it is usable, what was found and how to mend it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    needed_by_up: bool = True

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "FAIL" if self.needed_by_up else "missing"

    def line(self) -> str:
        text = f"{self.name:<20} {self.status:<8} {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n{'':<29}fix: {self.fix}"


# --------------------------------------------------------------------------------- numpy


def installed_numpy() -> str | None:
    try:
        return importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        return None


def required_numpy() -> str | None:
    """The numpy versions the CPU Triton build's python backend accepts, as its wheel declares them
    (e.g. ``<2.0.0,>=1.21``); None when the wheel is not installed (a GPU node's tritonserver brings
    its own Python environment)."""
    try:
        requirements = importlib.metadata.requires(PYTRITON_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    from packaging.requirements import Requirement

    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == "numpy" and requirement.marker is None:
            return str(requirement.specifier) or None
    return None


def check_numpy(installed: str | None, need: str | None) -> Finding:
    """numpy 2 under the wheel's python backend kills the stub on the first string tensor
    (``deserialize_bytes_tensor: unpack_from requires a buffer of at least … bytes``)."""
    fix = f"{_PIP} 'numpy{need or '>=1.24'}'"
    if installed is None:
        return Finding("numpy", False, "not installed", fix)
    if need is None:
        return Finding("numpy", True, f"numpy {installed}")
    from packaging.specifiers import SpecifierSet

    if installed in SpecifierSet(need):
        return Finding("numpy", True, f"numpy {installed} (the python backend needs numpy{need})")
    return Finding(
        "numpy",
        False,
        f"numpy {installed} is installed; the CPU python backend ({PYTRITON_DISTRIBUTION}) needs numpy{need}, "
        "and its stub dies on the first request otherwise",
        fix,
    )


# --------------------------------------------------------------------------------- tritonserver


def check_tritonserver() -> tuple[Finding, Path | None]:
    """Where tritonserver comes from; returns the wheel's server root too (None otherwise)."""
    server_root = _pytriton_server_root()
    if server_root is not None and (server_root / "bin" / "tritonserver").exists():
        wheel = importlib.metadata.version(PYTRITON_DISTRIBUTION)
        return Finding(
            "tritonserver",
            True,
            f"{server_root / 'bin' / 'tritonserver'} (CPU build, {PYTRITON_DISTRIBUTION} {wheel})",
        ), server_root
    on_path = shutil.which("tritonserver")
    if on_path:
        return Finding("tritonserver", True, f"{on_path} (PATH)"), None
    return (
        Finding(
            "tritonserver",
            False,
            "not found (neither the nvidia-pytriton wheel nor tritonserver on PATH)",
            f"{_PIP} '.[cpu]'   (from the repository; or `{_PIP} nvidia-pytriton`)",
        ),
        None,
    )


def check_python_stub(server_root: Path | None, python_version: str) -> Finding:
    """The python backend runs each model in a stub built for one Python version; the wheel ships
    one per version, and the interpreter running ``up`` must be one of them."""
    if server_root is None:
        stub = Path("/opt/tritonserver/backends/python/triton_python_backend_stub")
        if stub.exists():
            return Finding("python backend stub", True, str(stub))
        return Finding(
            "python backend stub", False, f"{stub} not found", "run on a node with the Triton container"
        )
    stub = server_root / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if stub.exists():
        return Finding("python backend stub", True, f"{stub}")
    shipped = sorted(p.name for p in (server_root / "python_backend_stubs").glob("*") if p.is_dir())
    return Finding(
        "python backend stub",
        False,
        f"none for Python {python_version} (the wheel ships {', '.join(shipped) or 'none'})",
        f"create the environment with one of those Pythons: make install PYTHON=python{shipped[-1] if shipped else '3.11'}",
    )


def tritonserver_version(binary: Path, env: dict[str, str], timeout_s: float = 10.0) -> str | None:
    """The version tritonserver prints at start (it has no --version): start it on an empty
    repository with no endpoints, read up to the ``server_version`` line, stop it."""
    repo = Path(os.environ.get("TMPDIR", "/tmp")) / f"tritonstack-empty-repo-{os.getpid()}"
    repo.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary),
        f"--model-repository={repo}",
        "--allow-http=false",
        "--allow-grpc=false",
        "--allow-metrics=false",
    ]
    try:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    except OSError:
        return None
    deadline = time.monotonic() + timeout_s
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "server_version" in line:
                return line.split("|")[2].strip() if line.count("|") >= 3 else None
            if time.monotonic() > deadline:
                break
        return None
    finally:
        process.kill()
        process.wait()
        repo.rmdir()


def _pytriton_server_root() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    return Path(pytriton.__file__).parent / "tritonserver"


# --------------------------------------------------------------------------------- ports, /dev/shm


def check_ports(ports: dict[str, int], host: str) -> list[Finding]:
    """The fixed ports ``up`` will listen on (label → port; 0 means any free one, not checked)."""
    findings = []
    for label, port in ports.items():
        if not port:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((host, port))
        except OSError as exc:
            findings.append(
                Finding(
                    f"{label} port",
                    False,
                    f"{host}:{port} is taken ({exc.strerror})",
                    f"stop what listens there (`ss -ltnp 'sport = :{port}'`), or pass --{label}-port 0 (any free port)",
                )
            )
        else:
            findings.append(Finding(f"{label} port", True, f"{host}:{port} is free"))
    return findings


def check_shared_memory(
    python_stubs: int, shm_dir: Path = Path("/dev/shm"), free_bytes: int | None = None
) -> Finding:
    if free_bytes is None:
        try:
            stats = os.statvfs(shm_dir)
        except OSError:
            return Finding("shared memory", False, f"{shm_dir} is missing", "mount a tmpfs on /dev/shm")
        free_bytes = stats.f_bavail * stats.f_frsize
    need = python_stubs * SHM_BYTES_PER_STUB
    detail = f"{free_bytes >> 20} MiB free in {shm_dir}"
    if python_stubs:
        detail += f"; {python_stubs} python stub(s) need about {need >> 20} MiB"
    if free_bytes >= need:
        return Finding("shared memory", True, detail)
    return Finding(
        "shared memory",
        False,
        detail,
        "in a container, start it with --shm-size=1g; on a host: sudo mount -o remount,size=1G /dev/shm",
    )


def python_stub_count(files: dict[str, bytes], replicas_by_pool: dict[str, int]) -> int:
    """Python-model instances a rendered stack starts: per ``model_repos/<pool>/<model>/config.pbtxt``
    with ``backend: "python"``, its instance counts, times the pool's replicas."""
    total = 0
    for path, data in files.items():
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "model_repos" or parts[3] != "config.pbtxt":
            continue
        text = data.decode("utf-8", "replace")
        if 'backend: "python"' not in text:
            continue
        counts = [int(line.split(":")[1]) for line in text.splitlines() if line.strip().startswith("count:")]
        total += (sum(counts) or 1) * replicas_by_pool.get(parts[1], 1)
    return total


# --------------------------------------------------------------------------------- tools


def check_tool(
    name: str, purpose: str, install: str, *, needed_by_up: bool = False, paths: tuple[str, ...] = ()
) -> Finding:
    found = shutil.which(name) or next((p for p in paths if os.access(p, os.X_OK)), None)
    if found:
        return Finding(name, True, f"{found} ({purpose})", needed_by_up=needed_by_up)
    return Finding(name, False, f"not found ({purpose})", install, needed_by_up=needed_by_up)


# --------------------------------------------------------------------------------- what `up` needs


def preflight(*, python_stubs: int, ports: dict[str, int], host: str) -> list[Finding]:
    """Everything ``up`` needs before it starts a process (``doctor`` reports these and more)."""
    server, server_root = check_tritonserver()
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    findings = [server]
    if server.ok:
        findings.append(check_python_stub(server_root, python_version))
    findings.append(check_numpy(installed_numpy(), required_numpy() if server_root is not None else None))
    findings.extend(check_ports(ports, host))
    if python_stubs:
        findings.append(check_shared_memory(python_stubs))
    return findings
