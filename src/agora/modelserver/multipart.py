"""A multipart/form-data body already in memory, split with bytes operations.

The hot path of a small predict: python-multipart's streaming parser (Starlette's) costs more
than the rest of the request together. Bodies that are large or come without a length go
through Starlette's streaming parser instead (see :mod:`agora.modelserver.uploads`).
"""

from __future__ import annotations

from dataclasses import dataclass

from agora.modelserver.errors import BadRequest


@dataclass(frozen=True)
class FilePart:
    filename: str
    content_type: str | None
    data: bytes


def boundary_of(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise BadRequest("multipart/form-data without a boundary in its Content-Type")


def _params(header: str) -> dict[str, str]:
    """``form-data; name="a"; filename="b.txt"`` → ``{name: a, filename: b.txt}``."""
    params: dict[str, str] = {}
    rest = header
    while ";" in rest:
        _, _, rest = rest.partition(";")
        key, _, value = rest.strip().partition("=")
        value = value.strip()
        if value.startswith('"'):
            end = 1
            while end < len(value) and not (value[end] == '"' and value[end - 1] != "\\"):
                end += 1
            rest = value[end + 1 :]
            value = value[1:end].replace('\\"', '"')
        else:
            value, _, tail = value.partition(";")
            rest = ";" + tail if tail else ""
        params[key.strip().lower()] = value
    return params


def parse(body: bytes, boundary: bytes) -> list[tuple[str, str | FilePart]]:
    delimiter = b"\r\n--" + boundary
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise BadRequest("malformed multipart/form-data body: no closing boundary")
    items: list[tuple[str, str | FilePart]] = []
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest("malformed multipart/form-data body: a part without headers")
        disposition = ""
        content_type = None
        for line in head.split(b"\r\n")[1:]:  # [0] is the rest of the boundary line
            name, _, value = line.decode("utf-8", "replace").partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
            elif name.strip().lower() == "content-type":
                content_type = value.strip()
        params = _params(disposition)
        if "name" not in params:
            raise BadRequest("malformed multipart/form-data body: a part without a name")
        if "filename" in params:
            items.append((params["name"], FilePart(params["filename"], content_type, data)))
        else:
            items.append((params["name"], data.decode("utf-8", "replace")))
    return items
