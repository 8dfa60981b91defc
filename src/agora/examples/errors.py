"""The error an example module raises for an argument it cannot use."""

from __future__ import annotations

from aiohttp import web


class BadInput(web.HTTPBadRequest, ValueError):
    """An argument the module cannot use; the message says why, in words for a person.

    DEEPaaS answers any other exception from ``predict`` with a bare "500 Internal Server
    Error / Server got itself in trouble"; one of aiohttp's HTTP exceptions it sends as it is,
    here a 400 whose body is the message. Being a ``ValueError`` too, it reads right to servers
    that know nothing of aiohttp. Pickled as its message alone: DEEPaaS runs ``predict`` in a
    worker process and sends exceptions back, and aiohttp's own cannot be pickled.
    """

    def __init__(self, message: str) -> None:
        super().__init__(text=message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[BadInput], tuple[str]]:
        return (type(self), (self.message,))
