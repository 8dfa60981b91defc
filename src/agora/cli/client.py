"""The CLI's only way to the server: /api/v1 over httpx, every failure turned into a CliError.

CliError
 └── ApiError      the server answered with an error (problem+json "detail", HTTP status)
Transport failures (refused, timed out, not HTTP) become a plain CliError naming the URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx

from agora import __version__
from agora.cli import config
from agora.cli.console import CliError

_HINTS = {
    "totp-required": "",
    "action-required": " (change it with `agora password`)",
}


class ApiError(CliError):
    def __init__(self, status: int, detail: str, problem_type: str, hint: str = "") -> None:
        super().__init__(f"{detail} (HTTP {status}){hint}")
        self.status = status
        self.detail = detail
        self.problem_type = problem_type

    def is_a(self, code: str) -> bool:
        """Whether the problem's type ends with ``code``, e.g. 'totp-required'."""
        return self.problem_type.rstrip("/").endswith("/" + code)


class Api:
    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout if timeout is not None else config.timeout()
        headers = {"User-Agent": f"agora-cli/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=self.timeout)

    def __enter__(self) -> Api:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The decoded JSON answer (None for 204); raises CliError/ApiError on any failure."""
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach Agora at {self.url}: is it running? (agora up)") from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"Agora at {self.url} did not answer within {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"cannot talk to Agora at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response, path)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                f"unexpected answer from {self.url} (HTTP {response.status_code}, "
                f"{_content_type(response)}, not JSON): is this an Agora server?"
            ) from exc

    def text(self, path: str, params: dict[str, Any]) -> str:
        """A text/plain answer (logs) in one piece."""
        try:
            response = self._http.get(path, params=params, headers={"Accept": "text/plain"})
        except httpx.HTTPError as exc:
            raise CliError(f"cannot talk to Agora at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response, path)
        return response.text

    def stream_text(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        """A text/plain answer as it comes (logs -f); no read timeout: quiet jobs print little."""
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self._http.stream(
                "GET", path, params=params, headers={"Accept": "text/plain"}, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response, path)
                yield from response.iter_text()
        except httpx.HTTPError as exc:
            raise CliError(f"the stream from {self.url} broke off: {exc}") from exc

    def _error(self, response: httpx.Response, path: str) -> CliError:
        status = response.status_code
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict) or not isinstance(problem.get("detail"), str):
            return CliError(
                f"HTTP {status} {response.reason_phrase} from {self.url} "
                f"({_content_type(response)}): is this an Agora server?"
            )
        problem_type = str(problem.get("type", ""))
        code = problem_type.rsplit("/", 1)[-1]
        hint = _HINTS.get(code, "")
        if status == 401 and not path.startswith("/auth/") and not hint:
            hint = (
                " (sign in again with `agora login`)"
                if self.token
                else " (sign in with `agora login`, or set AGORA_TOKEN to an API key)"
            )
        return ApiError(status, " ".join(problem["detail"].split()), problem_type, hint)


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "no content type")).split(";")[0]


def connect(*, signed_in: bool = True) -> Api:
    """An API client for the configured server; refuses early when a token is needed but none."""
    cfg = config.load()
    if signed_in and not cfg.token:
        where = (
            f" (the stored token is for {cfg.stored_url}, not {cfg.url})"
            if cfg.stored_token and cfg.stored_url != cfg.url
            else ""
        )
        raise CliError(
            f"not signed in to {cfg.url}{where}: run `agora login`, "
            f"or set {config.ENV_TOKEN} to an API key"
        )
    return Api(cfg.url, cfg.token)
