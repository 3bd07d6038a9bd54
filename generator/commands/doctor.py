"""tritonstack doctor: what this machine has for running a stack, and how to add what is missing.

The checks are ``up``'s own (:mod:`generator.runtime.environment`), plus the tools other commands
and the tests use. Exit 1 when something ``up`` needs is missing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from generator.errors import RuntimeSetupError
from generator.runtime import environment
from generator.runtime.environment import Finding, check_tool
from generator.runtime.tritonserver import find_tritonserver

DESCRIPTION = """\
Report the tritonserver found (the nvidia-pytriton wheel's CPU build, or tritonserver on PATH) and
its version, the python backend stub for this interpreter, numpy against what that backend needs,
free shared memory, and the optional tools: Prometheus and promtool (monitoring), nginx
(benchmarks), kubectl (kustomize overlays). Each missing thing comes with its install command.
Exit 1 when something `tritonstack up` needs is missing.
"""

_APT = "sudo apt-get install -y"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for tritonserver to print its version (default: 10)",
    )


def run(args: argparse.Namespace) -> int:
    findings = diagnose(args.version_timeout)
    for finding in findings:
        print(finding.line())
    blocking = [f for f in findings if f.needed_by_up and not f.ok]
    if blocking:
        print(
            f"\n{len(blocking)} problem(s) keep `tritonstack up` from running; see fix: above",
            file=sys.stderr,
        )
        return 1
    print("\n`tritonstack up` has what it needs.")
    return 0


def diagnose(version_timeout_s: float) -> list[Finding]:
    server, server_root = environment.check_tritonserver()
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    findings = [server]
    if server.ok:
        stub = environment.check_python_stub(server_root, python_version)
        findings.append(stub)
        if stub.ok:
            findings[0] = _with_version(server, version_timeout_s)
    need = environment.required_numpy() if server_root is not None else None
    findings.append(environment.check_numpy(environment.installed_numpy(), need))
    findings.append(environment.check_shared_memory(python_stubs=0))
    findings += [
        check_tool("prometheus", "up starts it when installed", f"{_APT} prometheus"),
        check_tool("promtool", "alert and recording rule tests", f"{_APT} prometheus"),
        check_tool("nginx", "router overhead benchmark", f"{_APT} nginx", paths=("/usr/sbin/nginx",)),
        check_tool("kubectl", "kubectl kustomize of the rendered overlays", f"{_APT} kubernetes-client"),
    ]
    return findings


def _with_version(server: Finding, timeout_s: float) -> Finding:
    try:
        install = find_tritonserver()
    except RuntimeSetupError as exc:
        return replace(server, ok=False, detail=f"{server.detail}: {exc}")
    found = environment.tritonserver_version(install.binary, install.env, timeout_s)
    return replace(server, detail=f"Triton {found or '(version not printed)'}, {server.detail}")
