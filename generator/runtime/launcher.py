"""Start one tritonserver per pool replica on this machine, wait until ready, stop them all.

Used by ``tritonstack up`` and by the integration tests. Every server gets its own free ports, its
own process group (so its python-backend stubs go with it) and its own log file; when any child
dies the caller learns which one, with the tail of its log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import RuntimeSetupError
from generator.naming import triton_names
from generator.runtime.tritonserver import TritonInstall
from generator.spec import Pool, Stack

__all__ = ["Replica", "Launcher", "LaunchSettings", "free_ports", "tail"]


@dataclass(frozen=True)
class LaunchSettings:
    host: str = "127.0.0.1"
    ready_timeout_s: float = 180.0
    poll_interval_s: float = 0.25
    stop_timeout_s: float = 15.0
    log_verbose: int = 0


@dataclass
class Replica:
    pool: str
    index: int
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    ready_after_s: float | None = None

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.index}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


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
    """The end of a server log, led by its error lines (Triton prints the reason for a failed
    start before a long shutdown sequence)."""
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
    """Owns the tritonserver processes of one stack."""

    stack: Stack
    out_dir: Path
    install: TritonInstall
    log_dir: Path
    settings: LaunchSettings = field(default_factory=LaunchSettings)
    replicas: list[Replica] = field(default_factory=list)

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
            pool=pool.name,
            index=index,
            host=self.settings.host,
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            log_path=self.log_dir / f"tritonserver-{pool.name}-{index}.log",
        )
        models = [name for model in pool.models for name in triton_names(model, pool.role).all()]
        command = self.install.command(
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
            f"--backend-config=python,shm-region-prefix-name=tritonstack{os.getpid()}_{pool.name}_{index}_",
        )
        log = replica.log_path.open("wb")
        try:
            replica.process = subprocess.Popen(
                command,
                env=self.install.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeSetupError(f"cannot start {self.install.binary}: {exc}") from None
        finally:
            log.close()
        return replica

    def wait_ready(self, on_progress: Callable[[Replica], None] | None = None) -> None:
        """Block until every replica answers /v2/health/ready; raise if one dies or times out."""
        started = time.monotonic()
        pending = list(self.replicas)
        while pending:
            for replica in list(pending):
                self.raise_if_exited(replica)
                if _is_ready(replica):
                    replica.ready_after_s = time.monotonic() - started
                    pending.remove(replica)
                    if on_progress:
                        on_progress(replica)
            if pending and time.monotonic() - started > self.settings.ready_timeout_s:
                names = ", ".join(r.name for r in pending)
                raise RuntimeSetupError(
                    f"not ready after {self.settings.ready_timeout_s:.0f}s: {names}\n"
                    f"last lines of {pending[0].log_path}:\n{tail(pending[0].log_path)}"
                )
            if pending:
                time.sleep(self.settings.poll_interval_s)

    def raise_if_exited(self, replica: Replica) -> None:
        code = replica.exited()
        if code is not None:
            raise RuntimeSetupError(
                f"tritonserver {replica.name} exited with code {code}\n"
                f"last lines of {replica.log_path}:\n{tail(replica.log_path)}"
            )

    def first_exited(self) -> Replica | None:
        return next((r for r in self.replicas if r.exited() is not None), None)

    def stop(self) -> None:
        """SIGTERM every server's process group, then SIGKILL what is left after the timeout."""
        live = [r for r in self.replicas if r.process is not None and r.process.poll() is None]
        for replica in live:
            _signal_group(replica, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout_s
        for replica in live:
            assert replica.process is not None
            try:
                replica.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for replica in self.replicas:
            # The group may still hold python stubs even when tritonserver itself exited.
            _signal_group(replica, signal.SIGKILL)
            if replica.process is not None:
                try:
                    replica.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass

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


def _is_ready(replica: Replica) -> bool:
    try:
        with urllib.request.urlopen(f"{replica.http_url}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _signal_group(replica: Replica, sig: signal.Signals) -> None:
    if replica.process is None:
        return
    try:
        os.killpg(replica.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
