"""A small DEEPaaS v2 module with a file argument, for the model-server benchmark.

It counts the lines, words and characters of an uploaded text file: the module's own work is
small, so the benchmark measures the servers (parsing the multipart upload, saving the file,
handing it to a worker, checking the answer against the schema), not a model. Written only
against the DEEPaaS v2 interface (module-level functions, webargs fields, a response schema),
so the same code runs under ``deepaas-run --model-name wordcount`` and Agora's model server.
It is found through ``wordcount-1.0.dist-info/entry_points.txt`` with this folder on
``PYTHONPATH``, as an installed module would be.
"""

from __future__ import annotations

from typing import Any

from webargs import fields, validate

schema = {
    "filename": fields.Str(required=True),
    "lines": fields.Int(required=True),
    "words": fields.Int(required=True),
    "characters": fields.Int(required=True),
    "longest_word": fields.Str(required=True),
}


def get_metadata() -> dict[str, Any]:
    return {
        "name": "wordcount",
        "description": "Counts the lines, words and characters of a text file.",
        "author": "Agora benchmarks",
        "license": "Apache-2.0",
        "version": "1.0",
    }


def warm() -> None:
    """Nothing to load: the module has no model."""


def get_predict_args() -> dict[str, fields.Field]:
    return {
        "text": fields.Field(
            required=True,
            metadata={"type": "file", "location": "form", "description": "A UTF-8 text file."},
        ),
        "accept": fields.Str(
            load_default="application/json",
            validate=validate.OneOf(["application/json"]),
            metadata={"description": "Media type of the response."},
        ),
    }


def predict(text: Any, accept: str = "application/json") -> dict[str, Any]:
    with open(text.filename, "rb") as f:
        content = f.read().decode("utf-8", "replace")
    words = content.split()
    return {
        "filename": str(text.original_filename),
        "lines": len(content.splitlines()),
        "words": len(words),
        "characters": len(content),
        "longest_word": max(words, key=len) if words else "",
    }


def get_train_args() -> dict[str, fields.Field]:
    return {}


def train(**kwargs: Any) -> dict[str, Any]:
    """Nothing to train; both servers answer 501 (DEEPaaS's convention for a missing method)."""
    raise NotImplementedError("wordcount has nothing to train")
