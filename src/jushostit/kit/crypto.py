"""Secrets at rest: MultiFernet over the configured keys (the first encrypts, all decrypt), and token hashing."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as error:
            raise ValueError("JUSHOSTIT_SECRET_KEYS must hold url-safe base64 Fernet keys") from error

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as error:
            raise ValueError("secret cannot be decrypted with any configured key") from error

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt with the first key (no-op for the plaintext)."""
        return self._fernet.rotate(ciphertext.encode()).decode()


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """Tokens we issue are random and long, so a fast hash is enough to store them without the plaintext."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
