"""A request's arguments as sent: the query string, the form (urlencoded or multipart) with
each file saved to a temporary file, or a JSON body. The body is counted while it streams
in, so an upload over the limit ends with 413 before it is all read. The temporary files are
removed when the ``Upload`` is closed (after the response, whatever happened)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.datastructures import ImmutableMultiDict, UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from agora.modelserver import multipart
from agora.modelserver.errors import InvalidArguments, UploadTooLarge
from agora.modelserver.files import UploadedFile

SPOOLED_IN_MEMORY = 1024 * 1024
# Bodies up to this size (with a Content-Length) are read whole and split in memory.
IN_MEMORY = 1024 * 1024


class Upload:
    """The parsed arguments of one request and the temporary files they hold."""

    def __init__(self) -> None:
        self.query: ImmutableMultiDict[str, Any] | None = None
        self.form: ImmutableMultiDict[str, Any] | None = None
        self.json: Mapping[str, Any] | None = None
        self.paths: list[str] = []

    def keep(self) -> list[str]:
        """Hands the temporary files over to the caller (a training), who removes them."""
        paths, self.paths = self.paths, []
        return paths

    def close(self) -> None:
        remove(self.paths)
        self.paths = []


def remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counting() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise UploadTooLarge(too_large(limit))
        return message

    return counting


def too_large(limit: int) -> str:
    return f"the request body is over the server's limit of {limit} bytes (--max-upload-bytes)"


async def read(request: Request, max_bytes: int) -> Upload:
    """Parses the request; the caller closes the result (``try/finally``)."""
    upload = Upload()
    try:
        await _read(request, max_bytes, upload)
    except BaseException:
        upload.close()
        raise
    return upload


async def _read(request: Request, max_bytes: int, upload: Upload) -> None:
    query: bytes = request.scope.get("query_string", b"")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise UploadTooLarge(too_large(max_bytes))
    content_type = request.headers.get("content-type", "")
    kind = _kind(content_type)
    if kind not in _PARSED:
        upload.query = query_of(query)
        return
    limited = Request(request.scope, _limited(request.receive, max_bytes))
    if kind == "application/json" or (
        length is not None and length.isdigit() and int(length) <= IN_MEMORY
    ):
        _parse(upload, query, content_type, await limited.body())
        return
    upload.query = query_of(query)
    form = await limited.form(max_files=1000, max_fields=1000)
    try:
        items: list[tuple[str, Any]] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                items.append((name, _saved(name, value, upload)))
            else:
                items.append((name, value))
        upload.form = ImmutableMultiDict(items)
    finally:
        await form.close()


_PARSED = ("multipart/form-data", "application/x-www-form-urlencoded", "application/json")


def _kind(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def query_of(query: bytes) -> ImmutableMultiDict[str, Any]:
    """The query string's arguments, decoded as Starlette's ``request.query_params`` are."""
    if not query:
        return ImmutableMultiDict()
    return ImmutableMultiDict(
        urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    )


def parse(query: bytes, content_type: str, body: bytes) -> Upload:
    """A whole body already in memory (the model server's lean predict); the caller closes
    the result."""
    upload = Upload()
    try:
        _parse(upload, query, content_type, body)
    except BaseException:
        upload.close()
        raise
    return upload


def _parse(upload: Upload, query: bytes, content_type: str, body: bytes) -> None:
    upload.query = query_of(query)
    kind = _kind(content_type)
    if kind == "application/json":
        if body.strip():
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidArguments({"_body": [f"not valid JSON: {exc}"]}) from None
            if not isinstance(parsed, dict):
                raise InvalidArguments({"_body": ["a JSON body must be an object"]})
            upload.json = parsed
    elif kind == "multipart/form-data":
        parts = multipart.parse(body, multipart.boundary_of(content_type))
        upload.form = ImmutableMultiDict(
            [
                (name, _written(name, v, upload) if isinstance(v, multipart.FilePart) else v)
                for name, v in parts
            ]
        )
    elif kind == "application/x-www-form-urlencoded":
        upload.form = ImmutableMultiDict(
            urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        )


def _written(name: str, part: multipart.FilePart, upload: Upload) -> Any:
    fd, path = tempfile.mkstemp(prefix="agora-upload-")
    upload.paths.append(path)
    with os.fdopen(fd, "wb") as out:
        out.write(part.data)
    return UploadedFile(
        name=name,
        filename=path,
        content_type=part.content_type,
        original_filename=part.filename,
    )


def _saved(name: str, part: UploadFile, upload: Upload) -> Any:
    fd, path = tempfile.mkstemp(prefix="agora-upload-")
    upload.paths.append(path)
    with os.fdopen(fd, "wb") as out:
        part.file.seek(0)
        shutil.copyfileobj(part.file, out, SPOOLED_IN_MEMORY)
    return UploadedFile(
        name=name,
        filename=path,
        content_type=part.content_type,
        original_filename=part.filename,
    )
