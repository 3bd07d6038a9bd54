"""Where the data files a render reads are: ``templates/``, ``deploy/``, ``monitoring/`` and the bundled tokenizer.

In the repository they are top-level folders beside the ``generator`` package. The wheel carries
them inside the package as ``generator/_data/`` (``setup.py`` copies them there when it builds), so
an installed tritonstack renders without a checkout. Every reader takes its paths from here; this is
the one module that knows the two layouts.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DATA_ROOT", "TEMPLATES_ROOT", "DEPLOY_ROOT", "MONITORING_ROOT", "BUNDLED_TOKENIZER", "PACKAGED_DATA"]

# The folder name inside the package that setup.py's build step fills; absent in a source checkout.
PACKAGED_DATA = "_data"


def _data_root() -> Path:
    package = resources.files("generator")
    # A wheel is installed unpacked (pip never imports tritonstack from a zip): the package is a
    # folder, and Jinja's FileSystemLoader needs real paths, not Traversables.
    if not isinstance(package, Path):
        raise ImportError(f"tritonstack must be installed as files, not from an archive ({package})")
    packaged = package / PACKAGED_DATA
    if packaged.is_dir():
        return packaged.resolve()
    return package.resolve().parent  # a source checkout (editable install): the repository root


DATA_ROOT = _data_root()
TEMPLATES_ROOT = DATA_ROOT / "templates"
DEPLOY_ROOT = DATA_ROOT / "deploy"
MONITORING_ROOT = DATA_ROOT / "monitoring"
BUNDLED_TOKENIZER = DATA_ROOT / "examples" / "tokenizers" / "tiny-chat"
