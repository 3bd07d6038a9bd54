"""tritonstack: one stack.yaml becomes a Triton + TensorRT-LLM serving stack."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("tritonstack")  # pyproject.toml's version, as installed
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
