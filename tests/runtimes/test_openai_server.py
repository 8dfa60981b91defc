"""The built-in CPU model server, run as a real process and driven through the official openai
client: a tiny GPT-2 built for the test, and the packaged all-MiniLM-L6-v2 for embeddings."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from agora.runtimes.engines import StopMatcher, chat_prompt
from tests.servers import free_port, wait_for_port
from tests.tiny_models import make_tiny_causal_lm, minilm_path

TOKEN = "service-token-for-runtime-tests"
MARKER = "zebra-violin-prompt-marker"


@dataclass
class ModelServer:
    port: int
    log: Path
    model: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str = TOKEN) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=token, max_retries=0)

    def http(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextlib.contextmanager
def model_server(model: Path, kind: str, name: str, log: Path) -> Iterator[ModelServer]:
    """Start a model server (it is not listening yet: see ``wait_until_listening``).

    One torch thread: on a small shared test machine more threads than free cores make torch
    spin, and a tiny model gains nothing from them."""
    env = {**os.environ, "AGORA_SERVICE_TOKEN": TOKEN}
    env.pop("AGORA_BIND_HOST", None)
    env.pop("PORT", None)
    port = free_port()
    with log.open("wb") as out:
        command = [sys.executable, "-m", "agora.runtimes.openai_server", "--model", str(model),
                   "--kind", kind, "--served-name", name, "--port", str(port),
                   "--threads", "1"]  # fmt: skip
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield ModelServer(port=port, log=log, model=model, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_listening(server: ModelServer, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(TimeoutError):
            wait_for_port("127.0.0.1", server.port, timeout=0.5)
            return
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the model server did not start:\n{server.log.read_text()}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModelServer]]:
    """Both servers, started side by side: the embedding model loads while the tiny LM is built."""
    root = tmp_path_factory.mktemp("model-servers")
    with contextlib.ExitStack() as stack:
        embedder = stack.enter_context(
            model_server(minilm_path(), "embedding", "minilm", root / "embedding.log")
        )
        tiny = make_tiny_causal_lm(root / "tiny-gpt2")
        llm = stack.enter_context(model_server(tiny, "llm", "tiny-gpt2", root / "llm.log"))
        for server in (llm, embedder):
            wait_until_listening(server)
        yield {"llm": llm, "embedder": embedder}


@pytest.fixture(scope="module")
def llm(servers: dict[str, ModelServer]) -> ModelServer:
    return servers["llm"]


@pytest.fixture(scope="module")
def embedder(servers: dict[str, ModelServer]) -> ModelServer:
    return servers["embedder"]


@pytest.fixture(scope="module")
def tokenizer(llm: ModelServer) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llm.model)


@pytest.fixture
def client(llm: ModelServer) -> Iterator[openai.OpenAI]:
    with llm.client() as c:
        yield c


def ask(client: openai.OpenAI, content: str, **kw: Any) -> Any:
    return client.chat.completions.create(
        model="tiny-gpt2", messages=[{"role": "user", "content": content}], **kw
    )


# --- language model ---------------------------------------------------------------------------


def test_health_needs_no_token_and_models_lists_the_served_name(llm: ModelServer) -> None:
    with llm.http(token=None) as http:
        assert http.get("/health").status_code == 200
    with llm.client() as c:
        assert [m.id for m in c.models.list()] == ["tiny-gpt2"]
        assert c.models.retrieve("tiny-gpt2").owned_by == "agora"


def test_chat_respects_max_tokens_and_counts_tokens_like_the_tokenizer(
    client: openai.OpenAI, tokenizer: Any
) -> None:
    messages = [("system", "You are terse."), ("user", "The model runs on the cluster")]
    answer = client.chat.completions.create(
        model="tiny-gpt2",
        messages=[{"role": r, "content": c} for r, c in messages],
        max_tokens=12,
        temperature=0,
    )
    prompt = chat_prompt(tokenizer, messages)
    assert answer.object == "chat.completion"
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False).input_ids)
    assert answer.usage.completion_tokens == 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 12

    newer = ask(client, "The model runs", max_completion_tokens=3, temperature=0)
    assert newer.usage.completion_tokens == 3


def test_chat_stream_sends_role_then_tokens_then_usage_and_matches_the_plain_answer(
    client: openai.OpenAI,
) -> None:
    plain = ask(client, "A job waits in the queue", max_tokens=16, temperature=0)
    chunks = list(
        ask(
            client,
            "A job waits in the queue",
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 3
    assert "".join(pieces) == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_plain_and_streamed_agree(client: openai.OpenAI, tokenizer: Any) -> None:
    prompt = "The gateway sends a request to the node"
    plain = client.completions.create(
        model="tiny-gpt2", prompt=prompt, max_tokens=10, temperature=0
    )
    assert plain.object == "text_completion"
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None
    assert plain.usage.prompt_tokens == len(tokenizer(prompt).input_ids)
    assert plain.usage.completion_tokens == 10
    with client.completions.create(
        model="tiny-gpt2", prompt=prompt, max_tokens=10, temperature=0, stream=True
    ) as stream:
        chunks = list(stream)
    assert len(chunks) >= 4
    assert all(c.object == "text_completion" and c.usage is None for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_stop_string_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    full = (
        client.completions.create(
            model="tiny-gpt2", prompt="Memory and disk", max_tokens=20, temperature=0
        )
        .choices[0]
        .text
    )
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.index(stop)]
    cut = client.completions.create(
        model="tiny-gpt2", prompt="Memory and disk", max_tokens=20, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == expected
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage is not None and cut.usage.completion_tokens < 20
    streamed = client.completions.create(
        model="tiny-gpt2", prompt="Memory and disk", max_tokens=20, temperature=0, stop=stop,
        stream=True,
    )  # fmt: skip
    with streamed:
        chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_sampling_with_a_seed_repeats(client: openai.OpenAI) -> None:
    answers = {
        ask(client, "Shared data", max_tokens=8, temperature=1.0, seed=7).choices[0].message.content
        for _ in range(2)
    }
    assert len(answers) == 1


def test_health_stays_fast_during_a_long_generation_and_disconnect_stops_it(
    llm: ModelServer, client: openai.OpenAI
) -> None:
    body = {
        "model": "tiny-gpt2",
        "messages": [{"role": "user", "content": "Write a long story"}],
        "max_tokens": 4000,
        "temperature": 0,
        "stream": True,
    }
    with llm.http() as http, llm.http(token=None) as probe:
        with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            seen = 0
            for line in stream.iter_lines():
                seen += '"content":"' in line and '"content":""' not in line
                if seen == 3:
                    break
            latencies = []
            for _ in range(5):
                started = time.monotonic()
                assert probe.get("/health").status_code == 200
                latencies.append(time.monotonic() - started)
        # Closing the stream must end the generation: with one slot, a request that had to wait
        # for ~1000 more tokens would take seconds.
        started = time.monotonic()
        answer = ask(client, "Hello", max_tokens=2, temperature=0)
        waited = time.monotonic() - started
    assert max(latencies) < 1.0, latencies
    assert answer.choices[0].finish_reason == "length"
    assert waited < 1.5, waited


@pytest.mark.parametrize("scheme", ["Bearer", "token"])
def test_both_authorization_schemes_work(llm: ModelServer, scheme: str) -> None:
    with httpx.Client(base_url=llm.url, headers={"Authorization": f"{scheme} {TOKEN}"}) as http:
        assert http.get("/v1/models").status_code == 200


def test_wrong_or_missing_token_is_refused(llm: ModelServer) -> None:
    with llm.client(token="not-the-token") as c, pytest.raises(openai.AuthenticationError) as info:
        ask(c, "hi", max_tokens=2)
    assert info.value.code == "invalid_api_key"
    with llm.http(token=None) as http:
        r = http.get("/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages.0.content"),
        ({"stop": ["a"] * 17}, "stop"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_bad_requests_get_400_naming_the_field(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-gpt2", **body)
    assert info.value.param == param
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    ("content", "status", "starts"),
    [
        (b"{not json", 400, "the request body is not valid JSON"),
        (b"[1, 2]", 400, "the request body must be a JSON object"),
        (b'{"model": "tiny-gpt2"}', 400, "messages: Field required"),
        (b'{"messages": []}', 400, "model: Field required"),
        (b"{" + b" " * (5 * 1024 * 1024) + b"}", 413, "the request body is larger than"),
    ],
)
def test_malformed_bodies_get_openai_errors(
    llm: ModelServer, content: bytes, status: int, starts: str
) -> None:
    with llm.http() as http:
        r = http.post("/v1/chat/completions", content=content)
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(starts)


def test_endpoints_of_the_other_kind_are_not_found(llm: ModelServer, embedder: ModelServer) -> None:
    with llm.client() as c, pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="tiny-gpt2", input="hi")
    with embedder.client() as c, pytest.raises(openai.NotFoundError):
        ask(c, "hi")
    with llm.http() as http:
        r = http.get("/v1/nothing-here")
        wrong_method = http.get("/v1/chat/completions")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "Invalid URL (GET /v1/nothing-here)"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_a_prompt_longer_than_the_context_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-gpt2", prompt="memory " * 1100, max_tokens=2)
    assert info.value.code == "context_length_exceeded"


def test_prompts_stay_out_of_the_log(llm: ModelServer, client: openai.OpenAI) -> None:
    ask(client, MARKER, max_tokens=2)
    list(ask(client, MARKER, max_tokens=2, stream=True))
    log = llm.log.read_text()
    assert "POST /v1/chat/completions" in log
    assert MARKER not in log


# --- embedding model --------------------------------------------------------------------------


def test_embeddings_are_unit_vectors_that_know_paraphrases(embedder: ModelServer) -> None:
    from transformers import AutoTokenizer

    texts = [
        "The cat sits on the mat.",
        "A cat is sitting on a rug.",
        "Quarterly interest rates rose sharply.",
    ]
    with embedder.client() as c:
        result = c.embeddings.create(model="minilm", input=texts, encoding_format="float")
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 384)
    assert [d.index for d in result.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > 0.6 > unrelated
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    assert result.usage.prompt_tokens == sum(len(tokenizer(t).input_ids) for t in texts)
    assert result.usage.total_tokens == result.usage.prompt_tokens


def test_base64_embeddings_decode_to_the_float_ones(embedder: ModelServer) -> None:
    with embedder.client() as c:
        floats = c.embeddings.create(model="minilm", input="GPU nodes", encoding_format="float")
        decoded_by_client = c.embeddings.create(model="minilm", input="GPU nodes")
    with embedder.http() as http:
        raw = http.post(
            "/v1/embeddings",
            json={"model": "minilm", "input": ["GPU nodes"], "encoding_format": "base64"},
        ).json()
    expected = np.array(floats.data[0].embedding, dtype=np.float32)
    ours = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(ours, expected)
    assert np.array_equal(np.array(decoded_by_client.data[0].embedding, dtype=np.float32), expected)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": [1, 2, 3]}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 128}, "dimensions"),
    ],
)
def test_bad_embedding_requests_get_400(
    embedder: ModelServer, body: dict[str, Any], param: str
) -> None:
    with embedder.http() as http:
        r = http.post("/v1/embeddings", json={"model": "minilm", **body})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


# --- prompt format and stop strings (no server) -----------------------------------------------


def test_chat_prompt_uses_the_chat_template_or_the_plain_format(tokenizer: Any) -> None:
    messages = [("system", "Be brief."), ("user", "Hi")]
    assert (
        chat_prompt(tokenizer, messages) == "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"
    )
    templated = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    templated.chat_template = (
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    assert chat_prompt(templated, messages) == "[system]Be brief.[user]Hi[assistant]"


def test_stop_matcher_holds_back_a_possible_stop_and_cuts_at_it() -> None:
    m = StopMatcher(["END", "\n\n"])
    assert m.feed("hello E") == ("hello ", False)
    assert m.feed("N") == ("", False)
    assert m.feed("Dless") == ("", True)
    m = StopMatcher(["END"])
    assert m.feed("EN") == ("", False)
    assert m.feed("ough") == ("ENough", False)
    assert m.feed("x\n") == ("x\n", False)
    assert m.flush() == ""
