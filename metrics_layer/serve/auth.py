"""API keys for the HTTP doors: `Authorization: Bearer <key>`.

Keys come from the project file (`api_keys: ["sha256:<hex>", ...]`, so the file never holds a
usable key) and from $METRICS_LAYER_API_KEYS (comma-separated plain keys, hashed on load).
A presented key is hashed and compared with every configured hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from typing import Iterable

from ..project import Project, ProjectError

ENV_KEYS = "METRICS_LAYER_API_KEYS"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def hash_key(key: str) -> str:
    """The form a key is configured in: sha256:<hex>."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """The configured key hashes; empty means no authentication."""

    def __init__(self, hashes: Iterable[str] = ()):
        self._digests = [bytes.fromhex(h.split(":", 1)[1]) for h in hashes]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, authorization: str | None) -> bool:
        """True when the Authorization header carries a configured key."""
        if not authorization:
            return False
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return False
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found = False
        for configured in self._digests:  # no early exit: timing does not tell which one matched
            found |= hmac.compare_digest(digest, configured)
        return found


def load_api_keys(project: Project, environ: dict[str, str] | None = None) -> ApiKeys:
    """Keys from the project's `api_keys` and from $METRICS_LAYER_API_KEYS."""
    environ = os.environ if environ is None else environ
    hashes: list[str] = []
    configured = project.settings.get("api_keys") or []
    if isinstance(configured, str):
        configured = [configured]
    if not isinstance(configured, list):
        raise ProjectError("api_keys must be a list of \"sha256:<hex>\" strings")
    for i, entry in enumerate(configured):
        text = str(entry).strip()
        algorithm, _, digest = text.partition(":")
        if algorithm != "sha256" or not _HEX64.match(digest):
            raise ProjectError(
                f"api_keys[{i}] is not \"sha256:<64 hex digits>\"; make one with: "
                "python -c \"import hashlib,sys; print('sha256:'+hashlib.sha256(sys.argv[1].encode()).hexdigest())\" YOUR_KEY"
            )
        hashes.append(f"sha256:{digest.lower()}")
    for key in (environ.get(ENV_KEYS) or "").split(","):
        if key.strip():
            hashes.append(hash_key(key.strip()))
    return ApiKeys(hashes)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
