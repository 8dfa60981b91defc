"""The OpenAPI 3 document: DEEPaaS's endpoints, with each model's predict and train arguments
as a ``multipart/form-data`` (or urlencoded) body, files as ``format: binary``.

A small mapper of marshmallow fields rather than apispec's converter, whose interface differs
between apispec 3 (DEEPaaS's) and 6.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

from marshmallow import fields as mf
from marshmallow import missing

from agora.modelserver.arguments import Arguments, choices_of, is_file
from agora.modelserver.model import ServedModel

# Most specific first: Integer is a Number, Email a String, AwareDateTime a DateTime.
_TYPES: list[tuple[type[mf.Field], dict[str, Any]]] = [
    (mf.Boolean, {"type": "boolean"}),
    (mf.Integer, {"type": "integer"}),
    (mf.Number, {"type": "number"}),
    (mf.UUID, {"type": "string", "format": "uuid"}),
    (mf.Email, {"type": "string", "format": "email"}),
    (mf.Url, {"type": "string", "format": "uri"}),
    (mf.DateTime, {"type": "string", "format": "date-time"}),
    (mf.Date, {"type": "string", "format": "date"}),
    (mf.String, {"type": "string"}),
    (mf.Dict, {"type": "object"}),
    (mf.Nested, {"type": "object"}),
]


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def field_schema(f: mf.Field) -> dict[str, Any]:
    """One field as a JSON schema property."""
    if is_file(f):
        prop: dict[str, Any] = {"type": "string", "format": "binary"}
    elif isinstance(f, mf.List):
        prop = {"type": "array", "items": field_schema(f.inner)}
    else:
        prop = next((dict(t) for cls, t in _TYPES if isinstance(f, cls)), {})
    meta = f.metadata
    if meta.get("description"):
        prop["description"] = str(meta["description"])
    choices = choices_of(f)
    if choices is not None:
        prop["enum"] = [_plain(c) for c in choices]
    default = f.load_default
    if default is not missing and not callable(default):
        prop["default"] = _plain(default)
    if f.allow_none:
        prop["nullable"] = True
    return prop


def body_schema(args: Arguments) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, f in args.fields.items():
        if name == "accept" or f.metadata.get("location") == "headers":
            continue
        props[f.data_key or name] = field_schema(f)
        if f.required:
            required.append(f.data_key or name)
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _body(args: Arguments) -> dict[str, Any]:
    schema = body_schema(args)
    kinds = ["multipart/form-data"]
    if not args.files:
        kinds += ["application/x-www-form-urlencoded", "application/json"]
    return {
        "required": bool(schema.get("required")),
        "content": {k: {"schema": schema} for k in kinds},
    }


def _accept_parameter(model: ServedModel) -> list[dict[str, Any]]:
    args = model.predict_args
    if args.accept is None:
        return []
    # OpenAPI ignores a header parameter named Accept; the query (or form) argument works for
    # every model, the header too for models that place it there.
    header = " or as the Accept header" if args.accept_in_header else ""
    return [
        {
            "name": "accept",
            "in": "query",
            "required": False,
            "description": f"Media type of the response (also as a form argument{header})",
            "schema": {"type": "string", "enum": args.accept, "default": args.default_accept},
        }
    ]


def _predict(model: ServedModel) -> dict[str, Any]:
    ok: dict[str, Any] = {}
    for kind in model.accepts:
        ok[kind] = (
            {"schema": {"type": "object"}}
            if kind == "application/json"
            else {"schema": {"type": "string", "format": "binary"}}
        )
    return {
        "post": {
            "tags": ["models"],
            "summary": f"Make a prediction with {model.name}",
            "operationId": f"predict_{model.name}",
            "parameters": _accept_parameter(model),
            "requestBody": _body(model.predict_args),
            "responses": {
                "200": {"description": "The prediction", "content": ok},
                "413": _problem("The upload is over the server's limit"),
                "422": _problem("A missing or invalid argument"),
                "500": _problem("The model failed; the detail carries its message"),
                "503": _problem("Every worker is busy and the queue is full"),
                "504": _problem("The prediction ran past the timeout"),
            },
        }
    }


def _train(model: ServedModel) -> dict[str, Any]:
    record = {"$ref": "#/components/schemas/Training"}
    return {
        "post": {
            "tags": ["models"],
            "summary": f"Start training {model.name}",
            "operationId": f"train_{model.name}",
            "requestBody": _body(model.train_args),
            "responses": {
                "200": {
                    "description": "The new training",
                    "content": {"application/json": {"schema": record}},
                },
                "422": _problem("A missing or invalid argument"),
            },
        },
        "get": {
            "tags": ["models"],
            "summary": f"List the trainings of {model.name}",
            "responses": {
                "200": {
                    "description": "Trainings, running and ended",
                    "content": {"application/json": {"schema": {"type": "array", "items": record}}},
                }
            },
        },
    }


def _training(model: ServedModel) -> dict[str, Any]:
    record = {
        "description": "The training",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Training"}}},
    }
    uuid_parameter = [
        {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    return {
        "parameters": uuid_parameter,
        "get": {
            "tags": ["models"],
            "summary": "The status of a training",
            "responses": {"200": record, "404": _problem("No such training")},
        },
        "delete": {
            "tags": ["models"],
            "summary": "Cancel (and forget) a training",
            "responses": {"200": record, "404": _problem("No such training")},
        },
    }


_COMPONENTS = {
    "schemas": {
        "Problem": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "object"},
            },
        },
        "Training": {
            "type": "object",
            "required": ["uuid", "date", "status", "args"],
            "properties": {
                "uuid": {"type": "string"},
                "date": {"type": "string"},
                "status": {"type": "string", "enum": ["running", "done", "error", "cancelled"]},
                "args": {"type": "object"},
                "message": {"type": "string"},
                "result": {"type": "object"},
            },
        },
    }
}


def document(models: list[ServedModel], version: str) -> dict[str, Any]:
    """The whole document; paths are as this server sees them (without a proxy's prefix)."""
    paths: dict[str, Any] = {
        "/v2/": {
            "get": {
                "tags": ["versions"],
                "summary": "V2 API version information",
                "responses": {"200": {"description": "The version"}},
            }
        },
        "/v2/models/": {
            "get": {
                "tags": ["models"],
                "summary": "The loaded models and their metadata",
                "responses": {"200": {"description": "The models"}},
            }
        },
    }
    for m in models:
        base = f"/v2/models/{m.name}"
        paths[f"{base}/"] = {
            "get": {
                "tags": ["models"],
                "summary": f"Metadata of {m.name}",
                "responses": {"200": {"description": "The model's metadata"}},
            }
        }
        paths[f"{base}/predict/"] = _predict(m)
        paths[f"{base}/train/"] = _train(m)
        paths[f"{base}/train/{{uuid}}"] = _training(m)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Agora model server (DEEPaaS v2 API)", "version": version},
        "paths": paths,
        "components": _COMPONENTS,
    }
