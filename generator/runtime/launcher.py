"""Start a stack's processes on this machine, wait until ready, stop them all.

One tritonserver per pool replica, then the services beside them (router, exporter, Prometheus).
Used by ``tritonstack up`` and by the integration tests. Every process gets its own free ports, its
own process group (so python-backend stubs go with their server) and its own log file; when any
child dies the caller learns which one, with the tail of its log.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import RuntimeSetupError
from generator.naming import pool_triton_models, triton_names
from generator.render.disaggregation import orchestrator_world_size, pool_environment
from generator.runtime.tritonserver import TritonInstall, remove_shm_regions, shm_prefix_option
from generator.spec import Pool, Stack

__all__ = ["LaunchSettings", "Launcher", "Managed", "Replica", "Service", "free_ports", "launch_notes", "tail"]


@dataclass(frozen=True)
class LaunchSettings:
    host: str = "127.0.0.1"
    ready_timeout_s: float = 180.0
    poll_interval_s: float = 0.25
    stop_timeout_s: float = 15.0
    log_verbose: int = 0


@dataclass
class Managed(ABC):
    """A child process with a log file and a URL that answers 200 once it is ready."""

    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    ready_after_s: float | None = field(default=None, init=False)

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def ready_url(self) -> str: ...

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


@dataclass
class Service(Managed):
    """The router, the exporter or Prometheus."""

    label: str = ""
    url: str = ""
    ready_path: str = "/"

    @property
    def name(self) -> str:
        return self.label

    @property
    def ready_url(self) -> str:
        return self.url + self.ready_path


@dataclass
class Replica(Managed):
    """One tritonserver of a pool."""

    pool: str = ""
    index: int = 0
    host: str = "127.0.0.1"
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.index}"

    @property
    def ready_url(self) -> str:
        return f"{self.http_url}/v2/health/ready"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel just handed out; held together so they are distinct."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tail(path: Path, lines: int = 12) -> str:
    """The end of a log, led by its error lines (Triton prints the reason for a failed start
    before a long shutdown sequence)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    all_lines = text.splitlines()
    errors = [line for line in all_lines if line.startswith("E") or "error" in line.lower()][-6:]
    last = [line for line in all_lines[-lines:] if line not in errors]
    return "\n".join(errors + (["..."] if errors and last else []) + last)


@dataclass
class Launcher:
    """Owns the processes of one stack on this machine."""

    stack: Stack
    out_dir: Path
    install: TritonInstall
    log_dir: Path
    settings: LaunchSettings = field(default_factory=LaunchSettings)
    replicas: list[Replica] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    # Names this launcher's python-backend shared-memory regions (unique per launcher and host).
    shm_tag: str = field(default_factory=lambda: f"tritonstack{os.getpid()}{secrets.token_hex(3)}")

    @property
    def processes(self) -> list[Managed]:
        return [*self.replicas, *self.services]

    def start(self) -> list[Replica]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for pool in self.stack.pools:
            repo = self.out_dir / "model_repos" / pool.name
            if not repo.is_dir():
                raise RuntimeSetupError(f"{repo} is missing; render the stack first")
            for index in range(pool.replicas):
                self.replicas.append(self._start_replica(pool, index, repo))
        return self.replicas

    def _start_replica(self, pool: Pool, index: int, repo: Path) -> Replica:
        http, grpc, metrics = free_ports(3, self.settings.host)
        replica = Replica(
            log_path=self.log_dir / f"tritonserver-{pool.name}-{index}.log",
            pool=pool.name,
            index=index,
            host=self.settings.host,
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
        )
        models = pool_triton_models(self.stack, pool)
        serve = self.install.command(
            repo.absolute(),
            f"--http-address={self.settings.host}",
            f"--grpc-address={self.settings.host}",
            f"--http-port={http}",
            f"--grpc-port={grpc}",
            f"--metrics-port={metrics}",
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in models),
            "--disable-auto-complete-config",
            "--exit-on-error=true",
            f"--log-verbose={self.settings.log_verbose}",
            # Each server's python stubs need their own shared-memory names on one host.
            shm_prefix_option(self._shm_prefix(pool.name, index)),
        )
        command = self._with_orchestrator_ranks(pool, index, repo, serve)
        _spawn(replica, command, {**self.install.env, **pool_environment(self.stack, pool)})
        return replica

    def _with_orchestrator_ranks(self, pool: Pool, index: int, repo: Path, serve: list[str]) -> list[str]:
        """In-server disaggregation on TensorRT-LLM engines: the serving tritonserver becomes rank 0
        (the orchestrator) of one mpirun, the other ranks host the context and generation copies and
        open no endpoints (launch_triton_server.py --multi-model --disable-spawn-processes,
        https://github.com/NVIDIA/TensorRT-LLM/blob/main/triton_backend/scripts/launch_triton_server.py).
        The reference engine runs both copies inside the one process: see :func:`launch_notes`."""
        world = orchestrator_world_size(self.stack, pool)
        if world == 1:
            return serve
        copies = []
        for name in pool.models:
            names = triton_names(name, pool.role, in_server_disaggregation=True)
            copies += [names.context, names.generation]
        command = ["mpirun", "--allow-run-as-root", "-n", "1", *serve]
        for rank in range(1, world):
            worker = self.install.command(
                repo.absolute(),
                "--model-control-mode=explicit",
                *(f"--load-model={name}" for name in copies if name),
                "--disable-auto-complete-config",
                "--allow-http=false",
                "--allow-grpc=false",
                "--allow-metrics=false",
                shm_prefix_option(self._shm_prefix(pool.name, index) + f"rank{rank}_"),
            )
            command += [":", "-n", "1", *worker]
        return command

    def start_service(self, label: str, command: list[str], url: str, ready_path: str) -> Service:
        """Start a process beside the servers; it is ready when ``url + ready_path`` answers 200."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        service = Service(log_path=self.log_dir / f"{label}.log", label=label, url=url, ready_path=ready_path)
        _spawn(service, command, dict(os.environ))
        self.services.append(service)
        return service

    def wait_ready(self, on_progress: Callable[[Managed], None] | None = None) -> None:
        """Block until every process started so far is ready; raise if one dies or times out."""
        started = time.monotonic()
        pending = [p for p in self.processes if p.ready_after_s is None]
        while pending:
            for member in list(pending):
                self.raise_if_exited(member)
                if _is_ready(member):
                    member.ready_after_s = time.monotonic() - started
                    pending.remove(member)
                    if on_progress:
                        on_progress(member)
            if pending and time.monotonic() - started > self.settings.ready_timeout_s:
                names = ", ".join(p.name for p in pending)
                raise RuntimeSetupError(
                    f"not ready after {self.settings.ready_timeout_s:.0f}s: {names}\n"
                    f"last lines of {pending[0].log_path}:\n{tail(pending[0].log_path)}"
                )
            if pending:
                time.sleep(self.settings.poll_interval_s)

    def raise_if_exited(self, member: Managed) -> None:
        code = member.exited()
        if code is not None:
            raise RuntimeSetupError(
                f"{member.name} exited with code {code}\nlast lines of {member.log_path}:\n{tail(member.log_path)}"
            )

    def first_exited(self) -> Managed | None:
        return next((p for p in self.processes if p.exited() is not None), None)

    def stop(self) -> None:
        """The services first (the router drains), then the servers: SIGTERM to each process
        group, SIGKILL to whatever is left after the timeout. A server that was killed (or died)
        leaves its python-backend shared-memory regions behind; those are removed."""
        for group in (self.services, self.replicas):
            _stop_all(list(group), self.settings.stop_timeout_s)
        for replica in self.replicas:
            remove_shm_regions(self._shm_prefix(replica.pool, replica.index))

    def _shm_prefix(self, pool: str, index: int) -> str:
        return f"{self.shm_tag}_{pool}_{index}_"

    def endpoints(self) -> dict[str, list[tuple[str, int, int, int]]]:
        """pool → [(host, http, grpc, metrics)] — the shape the router and exporter configs take."""
        result: dict[str, list[tuple[str, int, int, int]]] = {}
        for r in self.replicas:
            result.setdefault(r.pool, []).append((r.host, r.http_port, r.grpc_port, r.metrics_port))
        return result

    def pids(self) -> dict[str, list[int]]:
        result: dict[str, list[int]] = {}
        for r in self.replicas:
            if r.process is not None:
                result.setdefault(r.pool, []).append(r.process.pid)
        return result


def launch_notes(stack: Stack) -> list[str]:
    """What a local launch runs differently from the GPU manifests, said out loud."""
    notes = []
    for pool in stack.pools:
        if pool.in_server_disaggregation and orchestrator_world_size(stack, pool) == 1:
            notes.append(
                f"pool {pool.name}: in-server disaggregation on the CPU reference engine runs as one "
                "tritonserver process (both copies are python models); on GPUs it is one tritonserver per "
                "MPI rank under mpirun in TensorRT-LLM orchestrator mode (see the compose/Kubernetes manifests)"
            )
    return notes


def _spawn(member: Managed, command: list[str], env: dict[str, str]) -> None:
    log = member.log_path.open("wb")
    try:
        member.process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise RuntimeSetupError(f"cannot start {command[0]}: {exc}") from None
    finally:
        log.close()


def _stop_all(members: list[Managed], timeout_s: float) -> None:
    live = [m for m in members if m.process is not None and m.process.poll() is None]
    for member in live:
        _signal_group(member, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for member in live:
        assert member.process is not None
        try:
            member.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for member in members:
        # The group may still hold python stubs even when tritonserver itself exited.
        _signal_group(member, signal.SIGKILL)
        if member.process is not None:
            try:
                member.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _is_ready(member: Managed) -> bool:
    try:
        with urllib.request.urlopen(member.ready_url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _signal_group(member: Managed, sig: signal.Signals) -> None:
    if member.process is None:
        return
    try:
        os.killpg(member.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
