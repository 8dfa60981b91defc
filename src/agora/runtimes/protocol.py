"""OpenAI request bodies, checked at the edge, and OpenAI's error shape.

Types are strict (``"5"`` is not a number); fields OpenAI defines that this server does not
implement are ignored unless ignoring them would change the answer (``n`` > 1, ``logprobs``,
``tools``, ``echo``, ``suffix``), which is refused with 400.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_STOPS = 16
MAX_INPUTS = 2048


class APIError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def unsupported(param: str) -> APIError:
    return APIError(400, f"{param}: not supported by this server", param=param)


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool | None = None


class _Sampling(_Body):
    # None where a client sends null for "not given".
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None

    def stops(self) -> tuple[str, ...]:
        found = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(found) > MAX_STOPS:
            raise APIError(400, f"stop: at most {MAX_STOPS} stop strings", param="stop")
        return tuple(s for s in found if s)

    def check_supported(self) -> None:
        if self.n not in (None, 1):
            raise APIError(400, "n: only n=1 is supported", param="n")
        if self.logprobs:
            raise unsupported("logprobs")


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.tools:
            raise unsupported("tools")


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise APIError(400, "prompt: exactly one prompt per request", param="prompt")
        if self.echo:
            raise unsupported("echo")
        if self.suffix:
            raise unsupported("suffix")

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(_Body):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not 1 <= len(texts) <= MAX_INPUTS:
            raise APIError(400, f"input: give 1 to {MAX_INPUTS} strings", param="input")
        return texts


Request = TypeVar("Request", bound=_Body)
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def parse(kind: type[Request], raw: bytes) -> Request:
    """A checked request body; APIError(400) naming the first offending field otherwise."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        # Union members appear in the location as "str", "list[TextPart]": not field names.
        path = [
            str(p)
            for p in error["loc"]
            if isinstance(p, int) or (p.isidentifier() and p not in _TYPE_TAGS)
        ]
        param = ".".join(path) or None
        raise APIError(400, f"{param or 'body'}: {error['msg']}", param=param) from None
