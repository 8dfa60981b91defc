"""A served model as the API process sees it: its metadata, its arguments and its response
schema, read once from the model object; the work itself happens in worker processes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import marshmallow
import orjson

from agora.modelserver.arguments import JSON, Arguments, call_quietly
from agora.modelserver.errors import ModelFailed
from agora.modelserver.loader import ModelRef

logger = logging.getLogger("agora.modelserver")


def _optional(obj: Any, method: str, fallback: Any) -> Any:
    try:
        return call_quietly(getattr(obj, method))
    except (NotImplementedError, AttributeError):
        return fallback


def response_schema(obj: Any) -> marshmallow.Schema | None:
    schema = getattr(obj, "schema", None)
    if schema is None:
        return None
    if isinstance(schema, dict):
        schema = call_quietly(
            lambda: marshmallow.Schema.from_dict(schema, name="ModelPredictionResponse")
        )
    if not (isinstance(schema, type) and issubclass(schema, marshmallow.Schema)):
        raise TypeError("the model's 'schema' is neither a dict of fields nor a Schema class")
    instance: marshmallow.Schema = schema()
    return instance


@dataclass
class ServedModel:
    name: str
    ref: ModelRef
    metadata: dict[str, Any]
    predict_args: Arguments
    train_args: Arguments
    response_schema: marshmallow.Schema | None

    @classmethod
    def load(cls, ref: ModelRef) -> ServedModel:
        obj = ref.load()
        metadata = _optional(obj, "get_metadata", None)
        if not isinstance(metadata, dict):
            metadata = {
                "id": "0",
                "name": ref.name,
                "description": (
                    f"Could not load description from underlying model (loaded '{ref.name}')"
                ),
            }
        return cls(
            name=ref.name,
            ref=ref,
            metadata=metadata,
            predict_args=Arguments.from_fields(_optional(obj, "get_predict_args", {})),
            train_args=Arguments.from_fields(_optional(obj, "get_train_args", {})),
            response_schema=response_schema(obj),
        )

    @property
    def accepts(self) -> list[str]:
        return [a for a in self.predict_args.accept or [JSON] if a != "*/*"]


def encode(
    name: str, result: Any, accept: str, schema: marshmallow.Schema | None
) -> tuple[bytes, str]:
    """A prediction as DEEPaaS answers it: the model's bytes for a non-JSON ``accept``; else
    the result checked against the model's schema, or wrapped as ``{status, predictions}``.
    Runs in the worker, so that the server's event loop only relays bytes."""
    if accept not in (JSON, "*/*"):
        body = result.encode() if isinstance(result, str) else result
        if not isinstance(body, bytes | bytearray | memoryview):
            raise ModelFailed(
                f"model '{name}' returned a {type(result).__name__} for {accept}; "
                "bytes, a string or an open file were expected"
            )
        return bytes(body), accept
    if schema is not None:
        _check(name, result, schema)
    else:
        result = {"status": "OK", "predictions": result}
    try:
        return orjson.dumps(result, option=_ORJSON), JSON
    except TypeError as exc:
        raise ModelFailed(f"the result of model '{name}' is not JSON-serialisable: {exc}") from None


_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _check(name: str, result: Any, schema: marshmallow.Schema) -> None:
    try:
        schema.load(result)
    except marshmallow.ValidationError as exc:
        raise ModelFailed(
            f"the response of model '{name}' does not match its schema: {exc.messages}"
        ) from None
    except Exception as exc:
        raise ModelFailed(
            f"the response of model '{name}' cannot be checked against its schema: "
            f"{type(exc).__name__}: {exc}"
        ) from None
