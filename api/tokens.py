"""API bearer tokens: stored as SHA-256 digests, checked in constant time.

Why SHA-256 and not a slow KDF (scrypt, PBKDF2): a bearer token is a machine-made secret
(``pvcapid hash-token`` refuses fewer than 16 characters; ``openssl rand -hex 32`` makes
one), not a password a person picks, so its digest cannot be reversed by guessing, and a
slow KDF would add its whole cost (tens of ms, by design) to every request. GitHub stores
its API tokens the same way. The digest is compared with ``hmac.compare_digest`` against
every configured token, so the time taken tells nothing about a near miss.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.config import ApiToken

HASH_PREFIX = "sha256:"
MIN_TOKEN_LENGTH = 16

ANONYMOUS = "anonymous"
"""The caller's name when no tokens are configured (open access)."""


def hash_token(token: str) -> str:
    """The config's ``hash:`` value for a token."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def is_token_hash(text: str) -> bool:
    digest = text.removeprefix(HASH_PREFIX)
    return (
        text.startswith(HASH_PREFIX)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    )


@dataclass(frozen=True)
class Caller:
    name: str
    role: str


class TokenTable:
    """The configured tokens, by digest; a token with no ``name`` is called ``token-N``
    (its place in the list, from 1) in logs and audit records."""

    def __init__(self, tokens: list[ApiToken]) -> None:
        self._entries: list[tuple[bytes, Caller]] = []
        for index, token in enumerate(tokens, start=1):
            if token.hash is not None:
                digest = token.hash.get_secret_value()
            else:
                assert token.token is not None  # ApiToken holds one of the two
                digest = hash_token(token.token.get_secret_value())
            caller = Caller(token.name or f"token-{index}", token.role)
            self._entries.append((digest.encode(), caller))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def identify(self, offered: bytes) -> Caller | None:
        """Who holds this token, or None. Every entry is compared, each in constant time."""
        digest = (HASH_PREFIX + hashlib.sha256(offered).hexdigest()).encode()
        found = None
        for stored, caller in self._entries:
            if hmac.compare_digest(digest, stored):
                found = caller
        return found
