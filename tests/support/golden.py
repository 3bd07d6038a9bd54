"""Golden-file comparison for rendered trees, refreshed with ``pytest --update-golden``.

``tests/conftest.py`` defines the ``--update-golden`` option and the ``update_golden`` fixture; this
module compares a rendered ``{relative path: bytes}`` mapping with a golden folder, or rewrites the
folder (stale files included) when updating.
"""

from __future__ import annotations

import difflib
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = ["assert_golden_tree"]


def assert_golden_tree(files: Mapping[str, bytes], golden_dir: Path, update: bool) -> None:
    if update:
        if golden_dir.exists():
            shutil.rmtree(golden_dir)
        for relative, content in files.items():
            target = golden_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return
    assert golden_dir.is_dir(), f"no golden files in {golden_dir}; run pytest --update-golden once and review them"
    on_disk = {str(p.relative_to(golden_dir)): p.read_bytes() for p in sorted(golden_dir.rglob("*")) if p.is_file()}
    missing = sorted(set(on_disk) - set(files))
    extra = sorted(set(files) - set(on_disk))
    diffs = []
    for relative in sorted(set(files) & set(on_disk)):
        if files[relative] != on_disk[relative]:
            diff = difflib.unified_diff(
                on_disk[relative].decode(errors="replace").splitlines(),
                files[relative].decode(errors="replace").splitlines(),
                f"golden/{relative}",
                f"rendered/{relative}",
                lineterm="",
            )
            diffs.append("\n".join(list(diff)[:60]))
    problems = []
    if missing:
        problems.append(f"no longer rendered: {missing}")
    if extra:
        problems.append(f"not in the golden files: {extra}")
    problems += diffs
    assert not problems, "rendered output differs from the golden files (pytest --update-golden refreshes them):\n" + "\n".join(problems)
