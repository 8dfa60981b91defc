"""The model server's error tree; :mod:`agora.modelserver.app` maps it to problem+json.

ModelServerError                 (status)
├── InvalidArguments             422  a field is missing or of the wrong type
├── UnknownModel                 404
├── TrainingNotFound             404
├── UINotInstalled               404  Swagger UI's files were not copied in (scripts/web-assets.sh)
├── UploadTooLarge               413
├── NotImplementedByModel        501  the model lacks predict/train
├── ModelFailed                  500  the model raised; carries its message
├── WorkerCrashed                500  the worker process died; it is replaced
├── Overloaded                   503  the queue of waiting requests is full
└── PredictionTimeout            504  the worker ran past the timeout; it is replaced
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ModelServerError(Exception):
    status = 500

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidArguments(ModelServerError):
    """Values the model's fields refuse; ``errors`` maps each field to its messages."""

    status = 422

    def __init__(self, errors: Mapping[str, Any]) -> None:
        self.errors = dict(errors)
        parts = [f"{name}: {_flat(msgs)}" for name, msgs in self.errors.items()]
        super().__init__("invalid arguments: " + "; ".join(parts), errors=self.errors)

    def __reduce__(self) -> tuple[Any, ...]:  # crosses the pipe from a worker
        return (type(self), (self.errors,))


def _flat(messages: Any) -> str:
    if isinstance(messages, list | tuple):
        return " ".join(_flat(m) for m in messages)
    if isinstance(messages, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in messages.items())
    return str(messages)


class BadRequest(ModelServerError):
    status = 400


class UnknownModel(ModelServerError):
    status = 404


class TrainingNotFound(ModelServerError):
    status = 404


class UINotInstalled(ModelServerError):
    status = 404


class UploadTooLarge(ModelServerError):
    status = 413


class NotImplementedByModel(ModelServerError):
    status = 501


class ModelFailed(ModelServerError):
    status = 500


class ModelRefused(ModelServerError):
    """The model refused its input with a 4xx of its own: the DEEPaaS convention is to raise
    one of aiohttp's HTTP exceptions (``web.HTTPBadRequest(text=...)``)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class WorkerCrashed(ModelServerError):
    status = 500


class Overloaded(ModelServerError):
    status = 503


class PredictionTimeout(ModelServerError):
    status = 504
