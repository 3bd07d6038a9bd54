"""Write rendered files atomically, and compare an output directory with a fresh render.

The whole output is written into a sibling temporary directory and then exchanged with the old one
in a single ``renameat2(RENAME_EXCHANGE)`` call where Linux offers it, so a Triton polling a model
repository never sees half a model, and an interrupted write leaves the previous output intact. A
``manifest.json`` of content hashes marks the directory as ours; a directory without one, or with
files the manifest does not list, is not replaced unless the caller forces it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator.errors import DriftError, WriteError

__all__ = ["MANIFEST", "with_manifest", "write_output", "diff_output", "check_output", "WriteResult"]

MANIFEST = "manifest.json"
_TMP_PREFIX = ".tritonstack-tmp-"
# Python writes bytecode next to the models it imports when a server runs from the output; that is
# neither drift nor a file of the user's.
_IGNORED_DIR = "__pycache__"
_OLD_PREFIX = ".tritonstack-old-"


@dataclass(frozen=True)
class WriteResult:
    out_dir: Path
    written: int
    changed: list[str]


def with_manifest(files: dict[str, bytes], spec_name: str) -> dict[str, bytes]:
    """Add ``manifest.json`` (sorted, no timestamps: the same input gives the same bytes)."""
    manifest = {
        "generator": "tritonstack",
        "stack": spec_name,
        "files": {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())},
    }
    return {**files, MANIFEST: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()}


def write_output(files: dict[str, bytes], out_dir: Path, *, force: bool = False) -> WriteResult:
    """Replace ``out_dir`` with exactly ``files`` (which must include the manifest)."""
    out_dir = out_dir.absolute()
    if MANIFEST not in files:
        raise WriteError("internal: write_output needs the manifest; call with_manifest first")
    for path in files:
        _check_relative(path)
    previous = _read_tree(out_dir) if out_dir.exists() else {}
    if out_dir.exists() and not force:
        _refuse_foreign(out_dir, previous)
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(parent, out_dir.name)
        staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX + out_dir.name + "-", dir=parent))
    except OSError as exc:
        raise WriteError(f"cannot create the output next to {out_dir}: {exc}") from None
    try:
        for rel, data in sorted(files.items()):
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        staging.chmod(0o755)
        _swap_into_place(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise WriteError(f"cannot write {out_dir}: {exc}; the previous output is unchanged") from None
    changed = sorted(p for p in set(files) | set(previous) if files.get(p) != previous.get(p))
    return WriteResult(out_dir=out_dir, written=len(files), changed=changed)


def diff_output(files: dict[str, bytes], out_dir: Path) -> str:
    """A unified diff from what is on disk to what the spec renders; empty when they agree."""
    on_disk = _read_tree(out_dir) if out_dir.is_dir() else {}
    chunks: list[str] = []
    for path in sorted(set(files) | set(on_disk)):
        old, new = on_disk.get(path), files.get(path)
        if old == new:
            continue
        old_lines = _lines(old)
        new_lines = _lines(new)
        if old_lines is None or new_lines is None:
            chunks.append(f"Binary files a/{path} and b/{path} differ\n")
            continue
        chunks.extend(
            difflib.unified_diff(
                old_lines,
                new_lines,
                fromfile=f"a/{path}" if old is not None else "/dev/null",
                tofile=f"b/{path}" if new is not None else "/dev/null",
            )
        )
    return "".join(chunks)


def check_output(files: dict[str, bytes], out_dir: Path) -> None:
    """Raise :class:`DriftError` with the diff when ``out_dir`` differs from ``files``."""
    if not out_dir.is_dir():
        raise DriftError(f"--- {out_dir} does not exist; run `tritonstack render` first\n")
    diff = diff_output(files, out_dir)
    if diff:
        raise DriftError(diff)


def _lines(data: bytes | None) -> list[str] | None:
    if data is None:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def _check_relative(path: str) -> None:
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts or not parts:
        raise WriteError(f"internal: refusing to write outside the output directory: {path!r}")


def _read_tree(root: Path) -> dict[str, bytes]:
    if not root.is_dir():
        raise WriteError(f"{root} exists and is not a directory; choose another --out")
    tree: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if _IGNORED_DIR in path.relative_to(root).parts:
            continue
        if path.is_file() or path.is_symlink():
            tree[path.relative_to(root).as_posix()] = path.read_bytes() if path.is_file() else b""
    return tree


def _refuse_foreign(out_dir: Path, previous: dict[str, bytes]) -> None:
    if not previous:
        return
    manifest = previous.get(MANIFEST)
    try:
        listed = set(json.loads(manifest)["files"]) if manifest else None
    except (ValueError, KeyError, TypeError):
        listed = None
    if listed is None:
        raise WriteError(
            f"{out_dir} is not empty and was not written by tritonstack (no {MANIFEST}); "
            "choose an empty or new --out, or pass --force to replace it"
        )
    foreign = sorted(set(previous) - listed - {MANIFEST})
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise WriteError(
            f"{out_dir} holds files tritonstack did not write ({shown}); they would be lost. "
            "Move them out, or pass --force to replace the directory anyway"
        )


def _remove_leftovers(parent: Path, name: str) -> None:
    """Temporary and old directories of an earlier, interrupted write."""
    for prefix in (_TMP_PREFIX, _OLD_PREFIX):
        for leftover in parent.glob(f"{prefix}{name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    if _exchange(staging, out_dir):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the previous output
        return
    # No atomic exchange here (not Linux, or an old kernel/filesystem): two renames, the previous
    # output moved aside first so a failure in between can be undone.
    old = out_dir.with_name(f"{_OLD_PREFIX}{out_dir.name}-{os.getpid()}")
    os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except OSError:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
