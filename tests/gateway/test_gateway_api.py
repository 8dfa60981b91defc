"""The gateway through the official openai client: the happy paths and every error case."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from tests.gateway.conftest import Gateway

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fake(gw: Gateway, upstreams: Callable[..., str]) -> str:
    url = upstreams("--name", "up1", "--words", "4")
    gw.external("chat-model", url)
    gw.external("embed-model", url, kind="embedding")
    return url


def test_models_chat_completions_and_embeddings(gw: Gateway, fake: str) -> None:
    _, key = gw.key()
    client = gw.client(key)
    assert [m.id for m in client.models.list()] == ["chat-model", "embed-model"]

    chat = client.chat.completions.create(model="chat-model", messages=MSG)
    assert chat.choices[0].message.content == "up1 w0 w1 w2 w3"
    assert chat.model == "chat-model"  # the upstream's own name is not leaked
    assert chat.usage is not None and chat.usage.total_tokens == 11

    text = client.completions.create(model="chat-model", prompt="hi")
    assert text.choices[0].text == "up1 w0 w1 w2 w3"

    emb = client.embeddings.create(model="embed-model", input=["a", "bbb"])
    assert [d.embedding[0] for d in emb.data] == [1.0, 3.0]


def test_streams_pass_through_and_are_metered(gw: Gateway, fake: str) -> None:
    _, key = gw.key()
    client = gw.client(key)
    # The client did not ask for usage: the gateway asks the upstream anyway, meters it and
    # does not pass the usage chunk on.
    chunks = list(client.chat.completions.create(model="chat-model", messages=MSG, stream=True))
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "up1 w0 w1 w2 w3"
    assert {c.model for c in chunks} == {"chat-model"}
    # Asked for: passed on.
    chunks = list(
        client.chat.completions.create(
            model="chat-model", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    rows = gw.wait_usage(2, model="chat-model")
    assert sum(r["tokens_out"] for r in rows) == 8
    assert sum(r["tokens_in"] for r in rows) == 14


def test_bad_missing_and_revoked_keys_get_401(gw: Gateway, fake: str) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        gw.client("agora_" + "x" * 43).models.list()
    assert "not valid" in err.value.message
    r = httpx.get(gw.url + "/models")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"

    key_id, key = gw.key()
    client = gw.client(key)
    client.chat.completions.create(model="chat-model", messages=MSG)
    r = gw.api("DELETE", f"/projects/default/keys/{key_id}", gw.session())
    assert r.status_code == 204, r.text
    # Revocation applies on the very next request: the gateway's cache is invalidated.
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="chat-model", messages=MSG)


def test_key_without_inference_scope_gets_403(gw: Gateway, fake: str) -> None:
    _, key = gw.key(scopes=("read",))
    with pytest.raises(openai.PermissionDeniedError) as err:
        gw.client(key).chat.completions.create(model="chat-model", messages=MSG)
    assert "'inference' scope" in err.value.message


def test_unknown_model_404_and_model_not_granted_403(gw: Gateway, upstreams) -> None:
    url = upstreams()
    gw.external("private-model", url, public=False)
    r = gw.api("POST", "/projects", json={"name": "other"})
    assert r.status_code == 201, r.text
    r = gw.api("PUT", "/models/private-model/projects", json={"projects": ["other"]})
    assert r.status_code == 200, r.text
    _, key = gw.key()
    client = gw.client(key)
    assert [m.id for m in client.models.list()] == []
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=MSG)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.PermissionDeniedError) as err2:
        client.chat.completions.create(model="private-model", messages=MSG)
    assert err2.value.code == "model_not_allowed"
    # Granting the project opens it at once.
    gw.api("PUT", "/models/private-model/projects", json={"projects": ["other", "default"]})
    assert client.chat.completions.create(model="private-model", messages=MSG).choices


def test_malformed_requests_get_400_and_large_ones_413(gw: Gateway, fake: str) -> None:
    _, key = gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    cases = [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": []}', "'model' is required"),
        (b'{"model": "chat-model"}', "'messages'"),
        (b'{"model": "chat-model", "messages": [{"content": "x"}]}', "'role'"),
        (b'{"model": "chat-model", "messages": [], "stream": "yes"}', "'stream'"),
        (
            b'{"model": "chat-model", "messages": [{"role": "user"}], "max_tokens": -1}',
            "max_tokens",
        ),
        (b'{"model": "embed-model", "messages": [{"role": "user"}]}', "/v1/embeddings"),
    ]
    for body, words in cases:
        r = httpx.post(gw.url + "/chat/completions", content=body, headers=auth)
        assert r.status_code == 400, (body, r.text)
        assert words in r.json()["error"]["message"], (body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        gw.client(key).chat.completions.create(model="chat-model", messages=[])
    big = (
        b'{"model": "chat-model", "messages": [{"role": "user", "content": "'
        + b"x" * 9_000_000
        + b'"}]}'
    )
    r = httpx.post(gw.url + "/chat/completions", content=big, headers=auth)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(gw.url + "/chat/completions", headers=auth)
    assert r.status_code == 405
    r = httpx.post(gw.url + "/nope", headers=auth)
    assert r.status_code == 404


def test_rate_limit_and_budget_get_429_with_retry_after(gw: Gateway, fake: str) -> None:
    key_id, key = gw.key()
    client = gw.client(key)
    r = gw.api("PUT", f"/projects/default/keys/{key_id}/limits", gw.session(), json={"rpm": 2})
    assert r.status_code == 200, r.text
    client.chat.completions.create(model="chat-model", messages=MSG)
    client.chat.completions.create(model="chat-model", messages=MSG)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="chat-model", messages=MSG)
    assert err.value.code == "rate_limit_exceeded"
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert "API key 'k'" in err.value.message

    # A daily token budget on the project: 11 tokens per request, 15 allowed.
    _, key2 = gw.key(name="k2")
    r = gw.api("PUT", "/projects/default/limits", json={"tokens_per_day": 15})
    assert r.status_code == 200, r.text
    client2 = gw.client(key2)
    client2.chat.completions.create(model="chat-model", messages=MSG)
    client2.chat.completions.create(model="chat-model", messages=MSG)  # 11 < 15: admitted
    with pytest.raises(openai.RateLimitError) as err2:
        client2.chat.completions.create(model="chat-model", messages=MSG)
    assert err2.value.code == "insufficient_quota"
    assert "tokens per day" in err2.value.message


def test_upstream_failures_and_timeouts(gw: Gateway, upstreams: Callable[..., str]) -> None:
    gw.external("broken", upstreams("--fail-status", "500"))
    gw.external("slow", upstreams("--delay", "3"), first_byte_timeout=0.5)
    gw.external("wrong-key", upstreams(key="something-else"))
    gw.external("gone", "http://127.0.0.1:9/v1", connect_timeout=1)
    _, key = gw.key()
    client = gw.client(key)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="broken", messages=MSG)
    assert err.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="slow", messages=MSG)
    assert err.value.status_code == 504
    assert "did not start answering within 0.5 s" in err.value.message
    # An upstream's 4xx passes through as it is.
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="wrong-key", messages=MSG)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gone", messages=MSG)
    assert err.value.status_code == 502


def test_usage_records_hold_no_content(gw: Gateway, fake: str) -> None:
    _, key = gw.key()
    gw.client(key).chat.completions.create(
        model="chat-model", messages=[{"role": "user", "content": "secret-prompt-words"}]
    )
    gw.wait_usage(1)
    from sqlalchemy import select

    from agora.models import AuditEntry, UsageRecord

    with gw.platform.runtime.db.session() as s:
        rows = s.scalars(select(UsageRecord)).all()
        assert len(rows) == 1
        assert rows[0].status == 200 and rows[0].tokens_out == 4
        dump = repr([r.__dict__ for r in rows]) + repr(
            [e.details for e in s.scalars(select(AuditEntry)).all()]
        )
    assert "secret-prompt-words" not in dump
    assert "up1" not in dump  # nor the answer
