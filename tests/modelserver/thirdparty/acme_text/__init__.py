"""A third-party model written only against the ``deepaas`` package (DEEPaaS v2 interface),
as a module on the DEEP marketplace would be. The tests serve it, unchanged, with the real
``deepaas-run`` and with Agora's model server, and compare the answers."""

import io
import os
import time
import zipfile

from deepaas.model.v2.base import BaseModel
from deepaas.model.v2.wrapper import UploadedFile
from webargs import fields, validate

_WARMED = {"pid": None}


class TextModel(BaseModel):
    schema = {
        "filename": fields.Str(required=True),
        "content_type": fields.Str(required=True),
        "field": fields.Str(required=True),
        "lines": fields.Int(required=True),
        "words": fields.Int(required=True),
        "scaled": fields.Int(required=True),
        "mode": fields.Str(required=True),
        "tags": fields.List(fields.Str()),
        "warm": fields.Bool(required=True),
        "uploaded_file": fields.Bool(required=True),
    }

    def get_metadata(self):
        return {
            "name": "acme-text",
            "description": "Counts the lines and words of a text file.",
            "author": "ACME Research",
            "license": "MIT",
            "version": "1.0",
            "url": "https://example.org/acme-text",
        }

    def warm(self):
        _WARMED["pid"] = os.getpid()

    def get_predict_args(self):
        return {
            "data": fields.Field(
                required=True,
                metadata={"type": "file", "location": "form", "description": "A text file."},
            ),
            "scale": fields.Int(
                required=True, metadata={"description": "Words are multiplied by this."}
            ),
            # old-style keywords, as many published modules still write them
            "mode": fields.Str(
                missing="count", description="How to count.", enum=["count", "upper"]
            ),
            "tags": fields.List(fields.Str(), missing=[], description="Free tags."),
            "accept": fields.Str(
                metadata={"description": "Media type of the response."},
                validate=validate.OneOf(["application/json", "application/zip", "text/plain"]),
            ),
        }

    def predict(self, **kwargs):
        data = kwargs["data"]
        with open(data.filename, "rb") as f:
            content = f.read()
        if kwargs.get("accept") == "application/zip":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                info = zipfile.ZipInfo(data.original_filename, date_time=(2020, 1, 1, 0, 0, 0))
                archive.writestr(info, content)
            return buffer.getvalue()
        text = content.decode()
        if kwargs.get("accept") == "text/plain":
            return text.upper()
        words = text.split()
        return {
            "filename": data.original_filename,
            "content_type": data.content_type,
            "field": data.name,
            "lines": len(text.splitlines()),
            "words": len(words),
            "scaled": len(words) * kwargs["scale"],
            "mode": kwargs["mode"],
            "tags": kwargs["tags"],
            "warm": _WARMED["pid"] == os.getpid(),
            "uploaded_file": isinstance(data, UploadedFile),
        }

    def get_train_args(self):
        return {
            "epochs": fields.Int(required=True, metadata={"description": "Tenths of a second."}),
            "note": fields.Str(missing="none"),
        }

    def train(self, **kwargs):
        time.sleep(kwargs["epochs"] / 10)
        return {"epochs": kwargs["epochs"], "note": kwargs["note"]}


model = TextModel()
