"""ID-token verification: the provider's discovery document and key set are real; tokens no
honest provider would issue are made here. Where a token must carry a valid signature to reach
the claim checks, the key set is replaced by a test key (a double, named ``trusting``)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import anyio
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from agora.web.oidc import LoginFailed, Provider
from tests.oidc.conftest import CLIENT_ID, CLIENT_SECRET, PROVIDER_WARNINGS, oidc_settings

pytestmark = PROVIDER_WARNINGS

NONCE = "n-0S6_WzA2Mj"


@pytest.fixture(scope="module")
def test_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "test-key"})


@pytest.fixture
def client(provider: str) -> Provider:
    return Provider(oidc_settings(provider))


@pytest.fixture
def trusting(client: Provider, test_key: RSAKey) -> Provider:
    anyio.run(client.metadata)
    client._keys, client._keys_at = KeySet([test_key]), time.monotonic()
    return client


def claims(provider: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {
        "iss": provider,
        "sub": "kc-zoe",
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "nonce": NONCE,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def verify(client: Provider, token: str) -> dict[str, Any]:
    return anyio.run(client.verify_id_token, token, NONCE)


def refused(client: Provider, token: str) -> str:
    with pytest.raises(LoginFailed) as info:
        verify(client, token)
    assert info.value.status == 400
    return info.value.reason


def test_token_signed_with_the_trusted_key_passes(
    trusting: Provider, provider: str, test_key: RSAKey
) -> None:
    token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims(provider), test_key)
    assert verify(trusting, token)["sub"] == "kc-zoe"


def test_token_signed_by_another_key_is_refused(client: Provider, provider: str) -> None:
    real_kid = httpx.get(f"{provider}/jwks").json()["keys"][0].get("kid")
    forger = RSAKey.generate_key(2048)
    header = {"alg": "RS256", **({"kid": real_kid} if real_kid else {})}
    reason = refused(client, jwt.encode(header, claims(provider), forger))
    assert reason.startswith("invalid ID token")


def test_token_with_unknown_key_id_is_refused(client: Provider, provider: str) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": "not-the-providers"})
    token = jwt.encode({"alg": "RS256", "kid": "not-the-providers"}, claims(provider), forger)
    assert refused(client, token).startswith("invalid ID token")


def test_unsigned_token_is_refused(trusting: Provider, provider: str) -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    token = f"{b64({'alg': 'none'})}.{b64(claims(provider))}."
    assert refused(trusting, token).startswith("invalid ID token")


def test_token_signed_with_the_client_secret_is_refused(trusting: Provider, provider: str) -> None:
    key = OctKey.import_key(CLIENT_SECRET.encode() * 2)
    token = jwt.encode({"alg": "HS256"}, claims(provider), key)
    assert refused(trusting, token).startswith("invalid ID token")


@pytest.mark.parametrize(
    ("overrides", "claim"),
    [
        ({"aud": "another-client"}, "aud"),
        ({"aud": ["another-client", "third"]}, "aud"),
        ({"iss": "https://evil.example"}, "iss"),
        ({"exp": int(time.time()) - 3600}, "exp"),
        ({"nonce": "a-replayed-nonce"}, "nonce"),
        ({"nonce": None}, "nonce"),
        ({"sub": None}, "sub"),
    ],
)
def test_wrong_claims_are_refused(
    trusting: Provider, provider: str, test_key: RSAKey, overrides: dict[str, Any], claim: str
) -> None:
    token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims(provider, **overrides), test_key)
    reason = refused(trusting, token)
    assert reason.startswith("invalid ID token") and claim in reason


def test_garbage_is_refused(client: Provider) -> None:
    assert refused(client, "not-a-jwt").startswith("invalid ID token")
