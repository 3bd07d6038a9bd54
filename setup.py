"""The wheel's build step: copy the repository's data folders into the package as ``generator/_data/``.

Everything else about the project is declared in pyproject.toml. The folders stay at the top of the
repository (where a reader looks for them); ``generator.resources`` finds them in either place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# Kept in step with generator/resources.py, which reads them; MANIFEST.in puts them into the sdist.
DATA_FOLDERS = ("templates", "deploy", "monitoring", "examples/tokenizers/tiny-chat")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the folders in the checkout
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "generator" / "_data"
        for folder in DATA_FOLDERS:
            shutil.copytree(
                root / folder,
                target / folder,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )


setup(cmdclass={"build_py": BuildPyWithData})
