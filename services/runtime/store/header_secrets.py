"""channel.header values encrypted at rest (Fernet, from `cryptography`), when a key is set.

HERALD_SECRETS_KEY holds one or more Fernet keys, comma-separated, newest first: the newest
encrypts, every one decrypts (MultiFernet). Rotation: put a new key first, run
`herald secrets rotate` (re-encrypts every stored header with it), then drop the old key.
A stored header is `herald-encrypted:<Fernet token>`; values written before a key was set stay
readable as they are and are encrypted at the next write or rotation.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from herald.core.errors import SecretsKeyError
from herald.core.types import JsonObject

PREFIX = "herald-encrypted:"


class HeaderCipher:
    """Seals and opens the channel.header values of Subscription resources."""

    def __init__(self, keys: str | None) -> None:
        parts = [k.strip() for k in (keys or "").split(",") if k.strip()]
        self._fernet = MultiFernet([Fernet(k) for k in parts]) if parts else None

    @property
    def enabled(self) -> bool:
        """Whether headers are encrypted when written."""
        return self._fernet is not None

    def seal(self, resource: JsonObject) -> JsonObject:
        """A copy with each channel.header value encrypted (unchanged without a key)."""
        fernet = self._fernet
        if fernet is None:
            return resource
        return _map_headers(
            resource,
            lambda h: h if h.startswith(PREFIX) else PREFIX + fernet.encrypt(h.encode()).decode(),
        )

    def open(self, resource: JsonObject) -> JsonObject:
        """A copy with each encrypted channel.header value decrypted."""
        return _map_headers(resource, self._open_one)

    def rotate(self, resource: JsonObject) -> JsonObject:
        """The headers encrypted again with the newest key."""
        return self.seal(self.open(resource))

    def _open_one(self, header: str) -> str:
        if not header.startswith(PREFIX):
            return header
        if self._fernet is None:
            raise SecretsKeyError("a stored channel.header is encrypted; set HERALD_SECRETS_KEY")
        try:
            return self._fernet.decrypt(header[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SecretsKeyError(
                "a stored channel.header was encrypted with a key HERALD_SECRETS_KEY lacks"
            ) from exc


def _map_headers(resource: JsonObject, change: Any) -> JsonObject:
    channel = resource.get("channel")
    if not isinstance(channel, dict) or not isinstance(channel.get("header"), list):
        return resource
    headers = [change(h) if isinstance(h, str) else h for h in channel["header"]]
    return {**resource, "channel": {**channel, "header": headers}}


_cipher = HeaderCipher(None)


def configure(keys: str | None) -> HeaderCipher:
    """Set the process's cipher from HERALD_SECRETS_KEY (once, at start)."""
    global _cipher
    _cipher = HeaderCipher(keys)
    return _cipher


def cipher() -> HeaderCipher:
    """The process's cipher."""
    return _cipher
