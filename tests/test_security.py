"""Credential primitives."""

from __future__ import annotations

from pathlib import Path

from agora import security
from agora.settings import Settings


def test_default_password_hashes_are_argon2id_at_rfc9106_cost(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    security.configure_password_hashing(
        s.password_hash_time_cost, s.password_hash_memory_kib, s.password_hash_parallelism
    )
    try:
        h = security.hash_password("a long enough password")
        assert h.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert security.verify_password(h, "a long enough password")
        assert not security.verify_password(h, "another password")
        assert not security.verify_password(None, "anything")
    finally:
        security.configure_password_hashing(1, 1024, 1)


def test_api_keys_carry_256_bits() -> None:
    key = security.new_api_key()
    assert key.startswith("agora_")
    assert len(key) - len("agora_") >= 43  # 43 base62 characters > 256 bits
    assert security.new_api_key() != key


def test_encryption_round_trip_and_key_separation() -> None:
    a, b = security.Keyring("a" * 48), security.Keyring("b" * 48)
    token = a.encrypt("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in token
    assert a.decrypt(token) == "JBSWY3DPEHPK3PXP"
    try:
        b.decrypt(token)
    except ValueError as exc:
        assert "another secret key" in str(exc)
    else:
        raise AssertionError("decrypting with another key must fail")
