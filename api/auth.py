"""API keys: `API_KEYS=TENANT_ID:KEY,...`, kept as SHA-256 digests only, compared in constant
time. A request names its key as `Authorization: Bearer KEY` and sees that tenant's rows only."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass

from db.settings import ConfigError

# Keys are random secrets an operator generates (docs/api.md shows how); anything shorter than
# this is guessable, so it is refused at start rather than accepted.
MIN_KEY_LENGTH = 16
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKey:
    tenant_id: uuid.UUID
    digest: bytes

    def __repr__(self) -> str:  # never print a digest either
        return f"ApiKey(tenant_id={self.tenant_id})"


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """Parse API_KEYS. Errors name the entry by position, never its key."""
    keys: list[ApiKey] = []
    seen: dict[bytes, int] = {}
    entries = [entry.strip() for entry in raw.split(",")]
    for position, entry in enumerate(entries, 1):
        if not entry:
            continue
        tenant, separator, key = entry.partition(":")
        key = key.strip()
        if not separator or not key:
            raise ConfigError("API_KEYS", f"entry {position} is not TENANT_ID:KEY")
        try:
            tenant_id = uuid.UUID(tenant.strip())
        except ValueError:
            raise ConfigError(
                "API_KEYS", f"entry {position}: the tenant id is not a UUID"
            ) from None
        if key.startswith("sha256:"):
            hex_digest = key.removeprefix("sha256:")
            if not _HEX_DIGEST.fullmatch(hex_digest):
                raise ConfigError(
                    "API_KEYS", f"entry {position}: sha256: must be followed by 64 hex digits"
                )
            key_digest = bytes.fromhex(hex_digest)
        else:
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(
                    "API_KEYS",
                    f"entry {position}: a key needs at least {MIN_KEY_LENGTH} characters",
                )
            key_digest = digest(key)
        if key_digest in seen:
            raise ConfigError(
                "API_KEYS", f"entry {position} repeats the key of entry {seen[key_digest]}"
            )
        seen[key_digest] = position
        keys.append(ApiKey(tenant_id, key_digest))
    return tuple(keys)


class KeyRing:
    """Who a bearer token belongs to. Every stored digest is compared, match or not, so the
    time taken says nothing about which key (or how much of one) matched."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def digests(self) -> list[bytes]:
        return [key.digest for key in self._keys]

    def tenant_for(self, token: str) -> uuid.UUID | None:
        presented = digest(token)
        found: uuid.UUID | None = None
        for key in self._keys:
            if hmac.compare_digest(key.digest, presented):
                found = key.tenant_id
        return found
