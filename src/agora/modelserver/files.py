"""The file record handed to a model's ``predict``/``train`` for each uploaded file."""

from __future__ import annotations

import importlib
from collections import namedtuple
from typing import Any


def _record_class() -> Any:
    try:  # the very class modules written for DEEPaaS may check with isinstance
        return importlib.import_module("deepaas.model.v2.wrapper").UploadedFile
    except ImportError:  # the same shape without DEEPaaS installed
        record = namedtuple(  # type: ignore[name-match]  # noqa: PYI024
            "UploadedFile", ("name", "filename", "content_type", "original_filename")
        )
        record.__new__.__defaults__ = (None, None, None, None)
        return record


UploadedFile: Any = _record_class()
