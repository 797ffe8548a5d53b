"""Password hashing (argon2id via pwdlib) and the password policy."""

from __future__ import annotations

from functools import cache
from importlib import resources

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from zxcvbn import zxcvbn

from jushostit.config import Settings


@cache
def hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHash:
    return PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism),))


def hasher_for(settings: Settings) -> PasswordHash:
    return hasher(settings.password_hash_time_cost, settings.password_hash_memory_kib, settings.password_hash_parallelism)


@cache
def common_passwords() -> frozenset[str]:
    text = resources.files("jushostit").joinpath("data/common-passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line and not line.startswith("#"))


ZXCVBN_MAX_LENGTH = 72


def password_problem(password: str, *, email: str, min_length: int, min_score: int) -> str | None:
    """Why a password is refused, or None. Length counts characters, not bytes; then zxcvbn's estimate of how
    guessable it is (0-4, knowing the address) must reach `min_score` (refuses `aaaaaaaaaa` and ten spaces)."""
    if len(password) < min_length:
        return f"Password must be at least {min_length} characters long"
    if len(password) > 256:
        return "Password must be at most 256 characters long"
    if password.lower() in common_passwords():
        return "Password is too common"
    if password.lower() in {email.lower(), email.split("@")[0].lower()}:
        return "Password must not be your email address"
    # zxcvbn refuses to score more than 72 characters; a passphrase that long has shown its strength by then.
    estimate = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=[email, email.split("@")[0]])
    if estimate["score"] < min_score:
        feedback = estimate["feedback"]
        hint = " ".join(filter(None, [feedback.get("warning"), *feedback.get("suggestions", [])]))
        return f"Password is too easy to guess. {hint}".strip()
    return None
