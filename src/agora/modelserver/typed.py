"""Agora's typed model interface: a pydantic model of the arguments and a function.

    class Args(pydantic.BaseModel):
        text: str
        image: File | None = None          # an uploaded file (an UploadedFile record)
        accept: Literal["application/json", "image/png"] = "application/json"

    def predict(args: Args) -> Any: ...    # JSON-able, or bytes for a non-JSON accept

    model = TypedModel(predict, warm=load_weights, metadata={"description": "..."})

``predict`` may also be an object (or class) with a ``predict(args)`` method, ``warm()`` and a
``metadata`` dict. A :class:`TypedModel` *is* a DEEPaaS v2 model (its argument fields are
derived from the pydantic model), so it is served, documented and listed like one; point an
entry point of the ``deepaas.v2.model`` group, or ``--model``, at the module-level instance.
Arguments are checked by pydantic in the worker too: its errors come back as 422.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pydantic
from marshmallow import fields as mf
from marshmallow import validate
from pydantic_core import PydanticUndefined

from agora.modelserver.errors import InvalidArguments
from agora.modelserver.files import UploadedFile

File = Annotated[UploadedFile, pydantic.PlainValidator(lambda v: v)]
"""An uploaded file: the worker gets DEEPaaS's ``UploadedFile`` record (``filename`` is the
path of a temporary file, removed after the request)."""

_SCALARS: dict[Any, type[mf.Field]] = {
    str: mf.String,
    int: mf.Integer,
    float: mf.Float,
    bool: mf.Boolean,
}


def _args_model(func: Callable[..., Any]) -> type[pydantic.BaseModel]:
    params = list(inspect.signature(func).parameters.values())
    hints = typing.get_type_hints(func, include_extras=False)
    if len(params) != 1 or not (
        isinstance(hints.get(params[0].name), type)
        and issubclass(hints[params[0].name], pydantic.BaseModel)
    ):
        raise TypeError(
            f"{getattr(func, '__qualname__', func)} must take one argument annotated with a "
            "pydantic model of the arguments"
        )
    model: type[pydantic.BaseModel] = hints[params[0].name]
    return model


def _is_file(annotation: Any) -> bool:
    return annotation is UploadedFile or (
        get_origin(annotation) is Annotated and get_args(annotation)[0] is UploadedFile
    )


def _field_for(annotation: Any, **kwargs: Any) -> mf.Field:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        kwargs["allow_none"] = True
        return _field_for(inner[0] if len(inner) == 1 else Any, **kwargs)
    if _is_file(annotation):
        kwargs.setdefault("metadata", {})["type"] = "file"
        return mf.Field(**kwargs)
    if origin is Annotated:
        return _field_for(get_args(annotation)[0], **kwargs)
    if origin is Literal:
        choices = list(get_args(annotation))
        kind = _SCALARS.get(type(choices[0]), mf.Raw)
        return kind(validate=validate.OneOf(choices), **kwargs)
    if origin in (list, tuple, set, frozenset):
        item = get_args(annotation)[0] if get_args(annotation) else Any
        return mf.List(_field_for(item), **kwargs)
    return _SCALARS.get(annotation, mf.Raw)(**kwargs)


def marshmallow_fields(args: type[pydantic.BaseModel]) -> dict[str, mf.Field]:
    """The pydantic model's fields as DEEPaaS's dict of marshmallow fields."""
    out: dict[str, mf.Field] = {}
    for name, info in args.model_fields.items():
        kwargs: dict[str, Any] = {"metadata": {}}
        if info.description:
            kwargs["metadata"]["description"] = info.description
        if info.is_required():
            kwargs["required"] = True
        elif info.default is not PydanticUndefined and info.default is not None:
            kwargs["load_default"] = info.default
        out[info.alias or name] = _field_for(info.annotation, **kwargs)
    return out


class TypedModel:
    """A typed model offered through the DEEPaaS v2 interface."""

    def __init__(
        self,
        predict: Any,
        *,
        warm: Callable[[], Any] | None = None,
        train: Callable[[Any], Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._target = predict() if inspect.isclass(predict) else predict
        method = getattr(self._target, "predict", None)
        self._predict: Callable[[Any], Any] = method if callable(method) else self._target  # type: ignore[assignment]
        self._warm = warm or getattr(self._target, "warm", None)
        self._train = train or getattr(self._target, "train", None)
        self._metadata = metadata or dict(getattr(self._target, "metadata", None) or {})
        self.predict_args = _args_model(self._predict)
        self.train_args = _args_model(self._train) if self._train else None

    # The DEEPaaS v2 interface.
    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def get_predict_args(self) -> dict[str, mf.Field]:
        return marshmallow_fields(self.predict_args)

    def get_train_args(self) -> dict[str, mf.Field]:
        return marshmallow_fields(self.train_args) if self.train_args else {}

    def warm(self) -> None:
        if self._warm is not None:
            self._warm()

    def predict(self, **kwargs: Any) -> Any:
        return _plain(self._predict(_validated(self.predict_args, kwargs)))

    def train(self, **kwargs: Any) -> Any:
        if self._train is None or self.train_args is None:
            raise NotImplementedError
        return _plain(self._train(_validated(self.train_args, kwargs)))


def _validated(model: type[pydantic.BaseModel], kwargs: dict[str, Any]) -> Any:
    try:
        return model.model_validate(kwargs)
    except pydantic.ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "_"
            errors.setdefault(where, []).append(e["msg"])
        raise InvalidArguments(errors) from None


def _plain(result: Any) -> Any:
    if isinstance(result, pydantic.BaseModel):
        return result.model_dump(mode="json")
    return result
