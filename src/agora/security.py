"""Credential primitives: password hashing, random tokens, TOTP and at-rest encryption."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import string

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

API_KEY_PREFIX = "agora_"
SESSION_PREFIX = "agoras_"
_ALPHABET = string.ascii_letters + string.digits

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the username is unknown, so both paths cost the same time. Made on
# first use: hashing at import would slow every CLI start.
_DUMMY_HASH: str | None = None


def configure_password_hashing(time_cost: int, memory_kib: int, parallelism: int) -> None:
    """Set argon2id's cost for new hashes (existing hashes are upgraded at the next sign-in)."""
    global _hasher, _DUMMY_HASH
    current = _hasher
    if (current.time_cost, current.memory_cost, current.parallelism) == (
        time_cost,
        memory_kib,
        parallelism,
    ):
        return
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
    _DUMMY_HASH = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    global _DUMMY_HASH
    if password_hash is None and _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH or "", password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def random_secret(length: int = 43) -> str:
    """Base62 secret; 43 characters carry more than 256 bits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_api_key() -> str:
    return API_KEY_PREFIX + random_secret()


def new_session_token() -> str:
    return SESSION_PREFIX + random_secret()


def one_time_password() -> str:
    return "-".join(random_secret(5) for _ in range(4))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Keyring:
    """Keys derived from the installation's secret: never the secret itself."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._fernet = Fernet(base64.urlsafe_b64encode(self._derive(b"agora-encryption")))
        self._mac_key = self._derive(b"agora-mac")

    def _derive(self, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self._secret)

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, value: str) -> str:
        try:
            return self._fernet.decrypt(value.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("value was encrypted with another secret key") from exc

    def mac(self, value: str) -> str:
        return hmac.new(self._mac_key, value.encode(), hashlib.sha256).hexdigest()

    @property
    def signing_secret(self) -> str:
        return self._derive(b"agora-signing").hex()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_step(secret: str, code: str, last_step: int | None) -> int | None:
    """The time step a valid code belongs to, or None. Codes of a used step are refused."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now = totp.timecode(dt.datetime.now(dt.UTC))
    for step in (now, now - 1, now + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            if last_step is not None and step <= last_step:
                return None
            return step
    return None
