"""API keys: ``Authorization: Bearer <key>`` checked against keys from an environment variable
and/or a file, in constant time. No keys configured means the router is open (the default bind
is loopback for that reason)."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from generator.errors import RuntimeSetupError
from generator.spec.router import RouterSettings

__all__ = ["ApiKeys", "load_api_keys"]


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def allows(self, authorization: bytes | None) -> bool:
        if not self._keys:
            return True
        if not authorization or authorization[:7].lower() != b"bearer ":
            return False
        offered = authorization[7:].strip()
        # Compare against every key so the time taken does not reveal which one (or none) matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(offered, key)
        return matched


def load_api_keys(settings: RouterSettings, environ: dict[str, str] | None = None) -> ApiKeys:
    environ = dict(os.environ) if environ is None else environ
    keys: list[str] = []
    if settings.api_keys_env:
        keys += [k.strip() for k in environ.get(settings.api_keys_env, "").split(",") if k.strip()]
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise RuntimeSetupError(f"router api_keys_file {path}: {exc.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if (settings.api_keys_env or settings.api_keys_file) and not keys:
        raise RuntimeSetupError(
            "router: API keys are configured (api_keys_env/api_keys_file) but none were found; "
            "set the variable or fill the file, or remove the setting to run without keys"
        )
    return ApiKeys(keys)
