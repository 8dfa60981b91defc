"""A module-level DEEPaaS-interface model (no ``deepaas`` import) that misbehaves on demand,
for the error paths of Agora's model server."""

import os
import time

from marshmallow import fields, validate


def get_metadata():
    return {"name": "acme-faulty", "description": "Fails on demand."}


def get_predict_args():
    return {
        "n": fields.Int(required=True, metadata={"description": "A number."}),
        "mode": fields.Str(
            load_default="ok", validate=validate.OneOf(["ok", "raise", "sleep", "crash"])
        ),
        "upload": fields.Field(metadata={"type": "file"}),
    }


def predict(n, mode, upload=None):
    if mode == "raise":
        raise ValueError(f"n must be even, got {n}")
    if mode == "sleep":
        time.sleep(n)
    if mode == "crash":
        os._exit(3)
    size = os.path.getsize(upload.filename) if upload is not None else None
    return {"n": n, "pid": os.getpid(), "size": size, "path": upload and upload.filename}


def get_train_args():
    return {"seconds": fields.Float(required=True)}


def train(seconds):
    time.sleep(seconds)
    return {"slept": seconds}
