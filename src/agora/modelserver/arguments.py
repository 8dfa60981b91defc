"""A model's arguments: the dict of webargs/marshmallow fields that ``get_predict_args()`` or
``get_train_args()`` returns, turned into a schema that loads request values.

Values are looked up as webargs 5 (DEEPaaS's) does: the query string, then the form, then a
JSON body; a field whose metadata says ``location: headers`` reads the request header. List
fields take every value given. Old-style field keywords (``missing=``, ``description=``,
``location=``, ``type="file"``) are what marshmallow 3 still accepts and keeps in
``metadata``. The ``accept`` argument is DEEPaaS's: its ``OneOf`` choices plus ``*/*``, the
first choice by default.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import marshmallow
from marshmallow import fields as mf
from marshmallow import validate

from agora.modelserver.errors import InvalidArguments
from agora.modelserver.files import UploadedFile

JSON = "application/json"


def call_quietly(getter: Callable[[], Any]) -> Any:
    """Calls a model's getter, hiding marshmallow's warnings about old-style field keywords."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getter()


def is_file(f: mf.Field) -> bool:
    meta = f.metadata
    return (
        meta.get("type") == "file"
        or meta.get("location") == "files"
        or (meta.get("format") == "binary")
    )


def is_list(f: mf.Field) -> bool:
    return isinstance(f, mf.List)


def choices_of(f: mf.Field) -> list[Any] | None:
    for v in _validators(f):
        if isinstance(v, validate.OneOf):
            return list(v.choices)
    enum = f.metadata.get("enum")
    return list(enum) if isinstance(enum, list | tuple) else None


def _validators(f: mf.Field) -> list[Any]:
    return list(getattr(f, "validators", None) or [])


@dataclass
class Arguments:
    """The loader of one argument set (a model's predict or train arguments)."""

    fields: dict[str, mf.Field]
    accept: list[str] | None = None  # the accept choices, ``*/*`` last, when the model has them
    accept_in_header: bool = False
    files: frozenset[str] = field(default_factory=frozenset)
    lists: frozenset[str] = field(default_factory=frozenset)
    headers: frozenset[str] = field(default_factory=frozenset)
    schema: marshmallow.Schema | None = None

    @classmethod
    def from_fields(cls, given: Mapping[str, mf.Field] | None) -> Arguments:
        fields_ = dict(given or {})
        accept = None
        accept_in_header = False
        if "accept" in fields_:
            accept_field = fields_.pop("accept")
            accept = [str(c) for c in choices_of(accept_field) or [JSON]] + ["*/*"]
            accept_in_header = accept_field.metadata.get("location") == "headers"
        schema_cls = marshmallow.Schema.from_dict(fields_, name="Arguments")
        return cls(
            fields=dict(given or {}),
            accept=accept,
            accept_in_header=accept_in_header,
            files=frozenset(n for n, f in fields_.items() if is_file(f)),
            lists=frozenset(n for n, f in fields_.items() if is_list(f)),
            headers=frozenset(
                n for n, f in fields_.items() if f.metadata.get("location") == "headers"
            ),
            schema=schema_cls(unknown=marshmallow.EXCLUDE),
        )

    @property
    def default_accept(self) -> str:
        return self.accept[0] if self.accept else JSON

    def load(
        self,
        query: Any,
        form: Any,
        json_body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
    ) -> dict[str, Any]:
        """The model's keyword arguments; ``query`` and ``form`` are multi-dicts (``getlist``)
        whose files are already :class:`UploadedFile` records."""
        assert self.schema is not None
        raw: dict[str, Any] = {}
        for name, f in self.schema.fields.items():
            key = f.data_key or name
            if name in self.headers:
                if key in headers:
                    raw[key] = headers[key]
                continue
            value = self._lookup(key, name in self.lists, query, form, json_body)
            if value is not None:
                raw[key] = value
        not_files = [n for n in self.files if n in raw and not isinstance(raw[n], UploadedFile)]
        if not_files:
            raise InvalidArguments(
                {
                    n: ["Must be an uploaded file (a multipart/form-data file part)."]
                    for n in not_files
                }
            )
        try:
            args: dict[str, Any] = self.schema.load(raw)
        except marshmallow.ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages}
            raise InvalidArguments(messages) from None
        if self.accept is not None:
            args["accept"] = self._accept(query, form, json_body, headers)
        return args

    @staticmethod
    def _lookup(
        key: str, many: bool, query: Any, form: Any, json_body: Mapping[str, Any] | None
    ) -> Any:
        for source in (query, form):
            if source is not None and key in source:
                return source.getlist(key) if many else source[key]
        if json_body is not None and key in json_body:
            return json_body[key]
        return None

    def _accept(
        self,
        query: Any,
        form: Any,
        json_body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
    ) -> str:
        assert self.accept is not None
        given = self._lookup("accept", False, query, form, json_body)
        if given is None and self.accept_in_header:
            header = headers.get("accept")
            # A browser's list ("text/html,*/*;q=0.8") picks the first choice it names.
            if header is not None and header not in self.accept:
                offered = [p.split(";")[0].strip() for p in header.split(",")]
                header = next((o for o in offered if o in self.accept), None)
            given = header
        if given is None:
            return self.default_accept
        if given not in self.accept:
            choices = ", ".join(self.accept)
            raise InvalidArguments({"accept": [f"Must be one of: {choices}."]})
        return str(given)
