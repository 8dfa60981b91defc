"""The in-memory multipart splitter agrees with what HTTP clients send."""

from __future__ import annotations

import httpx
import pytest

from agora.modelserver import multipart
from agora.modelserver.errors import BadRequest


def test_fields_files_and_boundary_like_content() -> None:
    content = b"line\r\n--not-the-boundary\r\n\r\nend"
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"scale": "3", "tags": ["a", "b"], "quote": 'he said "hi"', "text": "héllo"},
        files={"data": ("notes.txt", content, "text/plain"), "empty": ("e.bin", b"")},
    )
    body = request.read()
    parts = multipart.parse(body, multipart.boundary_of(request.headers["content-type"]))
    assert parts == [
        ("scale", "3"),
        ("tags", "a"),
        ("tags", "b"),
        ("quote", 'he said "hi"'),
        ("text", "héllo"),
        ("data", multipart.FilePart("notes.txt", "text/plain", content)),
        ("empty", multipart.FilePart("e.bin", "application/octet-stream", b"")),
    ]


@pytest.mark.parametrize(
    "body",
    [b"", b"--B\r\nno headers end", b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--"],
)
def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        multipart.parse(body, b"B")


def test_a_missing_boundary_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="boundary"):
        multipart.boundary_of("multipart/form-data")
