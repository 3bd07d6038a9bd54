"""The README's commands, in the order it shows them, on a fresh clone (issue 17).

The repository is cloned into a temporary directory and installed there into its own ``.venv``
(``pip install --no-deps -e``: the packages come from this checkout's environment through a
``.pth`` line, so nothing is downloaded). Then the first block (``make demo``, represented by
``examples/demo.py``, which is all it runs after installing) and every command of the tour's ``sh``
block run with the installed ``tritonstack``, in order: short commands to completion, ``up`` until
it prints its addresses, then a request to the router it printed, then SIGINT. The commands are
read from README.md, so the test follows the README when it changes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from tests.support.paths import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.triton]

README = REPO_ROOT / "README.md"
# What `make demo` runs once `make install` has installed the package (see the Makefile).
MAKE_TARGETS = {"make demo": ".venv/bin/python examples/demo.py"}
NOT_WALKED = {"make test": "the test suite itself"}
UP_READY_S = 240.0


def sh_blocks(markdown: str) -> list[tuple[str, list[str]]]:
    """``(section heading, commands)`` of every fenced ``sh`` block, comments and blanks dropped."""
    blocks, heading = [], ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^```sh\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL):
        if match.group(1):
            heading = match.group(1).lstrip("# ").strip()
            continue
        commands = [line.split(" #")[0].strip() for line in match.group(2).splitlines()]
        blocks.append((heading, [c for c in commands if c and not c.startswith("#")]))
    return blocks


def newcomer_commands(markdown: str) -> list[str]:
    """The set-up block at the top, then the tour."""
    blocks = sh_blocks(markdown)
    setup = blocks[0][1]
    tour = next(commands for heading, commands in blocks if heading == "A short tour")
    return [c for c in [*setup, *tour] if c not in NOT_WALKED]


def test_the_readme_commands_are_found() -> None:
    commands = newcomer_commands(README.read_text())
    assert commands[0] == "make demo"
    assert any(c.startswith("tritonstack up ") for c in commands)
    assert all(c in MAKE_TARGETS or c.startswith("tritonstack ") for c in commands), commands


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert (REPO_ROOT / ".git").exists(), "the newcomer's walk starts from a git clone of this checkout"
    clone = tmp_path_factory.mktemp("newcomer") / "tritonstack"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # This environment's packages (numpy, pytriton, transformers…) without this checkout's own
    # editable install: a path in a .pth file is added as is, its own .pth files are not read.
    site = Path(sysconfig.get_path("purelib"))
    new_site = next(venv.glob("lib/python*/site-packages"))
    (new_site / "tritonstack-test-base.pth").write_text(f"{site}\n")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "-e",
            str(clone),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return clone


def test_readme_commands_work_in_order_on_a_fresh_clone(fresh_clone: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(fresh_clone / ".venv" / "bin"), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    installed = subprocess.run(
        ["tritonstack", "--version"], check=False, cwd=fresh_clone, env=env, capture_output=True, text=True
    )
    assert installed.returncode == 0 and shutil.which("tritonstack", path=env["PATH"]).startswith(
        str(fresh_clone)
    )

    for command in newcomer_commands((fresh_clone / "README.md").read_text()):
        started = time.monotonic()
        if command.startswith("tritonstack up "):
            _walk_up(command, fresh_clone, env)
        else:
            result = subprocess.run(
                ["bash", "-c", MAKE_TARGETS.get(command, command)],
                check=False,
                cwd=fresh_clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, (
                f"`{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        print(f"{time.monotonic() - started:6.1f}s  {command}")
    assert (fresh_clone / "stack.schema.json").stat().st_size > 0


def _walk_up(command: str, clone: Path, env: dict[str, str]) -> None:
    """Start ``up``, wait for its addresses, ask its router for the models, stop it with SIGINT."""
    if not _free(9000) or not _free(9400):
        # Another stack holds the spec's ports on this shared machine; `up` would (rightly) refuse.
        command += " --router-port 0 --exporter-port 0"
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=clone,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + UP_READY_S
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready.") or time.monotonic() > deadline:
                break
        output = "".join(lines)
        assert any(line.startswith("ready.") for line in lines), f"`{command}` never became ready:\n{output}"
        endpoint = re.search(r"OpenAI-compatible endpoint: (\S+)", output)
        assert endpoint, output
        models = httpx.get(f"{endpoint.group(1)}/models", timeout=10).json()
        assert {m["id"] for m in models["data"]} >= {"tiny-chat", "tiny-pd"}
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, f"`{command}` stopped with {process.returncode}:\n{output}{rest}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert (clone / "build" / "quickstart" / "manifest.json").exists()


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
