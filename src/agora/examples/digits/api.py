"""The digits module's DEEPaaS v2 functions: predict a handwritten digit from an image, train."""

from __future__ import annotations

import os
from typing import Any

from webargs import fields, validate

from agora.examples.digits import model
from agora.examples.metadata import deepaas_metadata
from agora.examples.store import TrainedModel

NAME = "digits"
ACCEPT = ["application/json", "image/png"]  # the first is the default

_trained = TrainedModel(NAME, model.fit, model.sample)

# The JSON answer of predict (DEEPaaS checks answers against it and documents it).
schema = {
    "digit": fields.Int(required=True, metadata={"description": "The predicted digit."}),
    "probability": fields.Float(metadata={"description": "The predicted digit's probability."}),
    "probabilities": fields.Dict(
        keys=fields.Str(),
        values=fields.Float(),
        metadata={"description": "The probability of each digit, 0 to 9."},
    ),
    "classifier": fields.Str(metadata={"description": "The kind of model that answered."}),
    "accuracy": fields.Float(metadata={"description": "The model's held-out accuracy."}),
}


def get_metadata() -> dict[str, Any]:
    return deepaas_metadata(NAME, __package__ or "agora.examples.digits")


def warm() -> None:
    """Load the trained model, or train the default one if there is none yet."""
    _trained.predictor()


def get_predict_args() -> dict[str, fields.Field]:
    # New field objects on every call: DEEPaaS changes the `accept` field it is given.
    return {
        "image": fields.Raw(
            required=True,
            metadata={
                "description": "A picture of one handwritten digit (PNG or JPEG).",
                "type": "file",
                "location": "form",
            },
        ),
        "accept": fields.Str(
            load_default=ACCEPT[0],
            validate=validate.OneOf(list(ACCEPT)),
            metadata={
                "description": (
                    "Media type of the answer: application/json for the digit and its "
                    "probabilities, image/png for the 8×8 image the model sees."
                ),
                "location": "headers",
            },
        ),
    }


def predict(image: Any, accept: str = ACCEPT[0]) -> dict[str, Any] | bytes:
    path, name = _uploaded(image)
    values = model.image_to_digit(path, name)
    if accept == "image/png":
        return model.digit_png(values)
    estimator, report = _trained.predictor()
    probabilities = estimator.predict_proba(values.reshape(1, -1))[0]
    best = int(probabilities.argmax())
    return {
        "digit": int(estimator.classes_[best]),
        "probability": round(float(probabilities[best]), 4),
        "probabilities": {
            str(c): round(float(p), 4)
            for c, p in zip(estimator.classes_, probabilities, strict=True)
        },
        "classifier": report["classifier"],
        "accuracy": report["accuracy"],
    }


def get_train_args() -> dict[str, fields.Field]:
    return {
        "classifier": fields.Str(
            load_default=model.DEFAULTS["classifier"],
            validate=validate.OneOf(list(model.CLASSIFIERS)),
            metadata={
                "description": "Kind of model: " + ", ".join(model.CLASSIFIERS),
                "enum": list(model.CLASSIFIERS),
            },
        ),
        "C": fields.Float(
            load_default=model.DEFAULTS["C"],
            validate=validate.Range(min=0.0001, max=10000),
            metadata={"description": "Inverse regularisation strength (svc, logistic_regression)."},
        ),
        "test_size": fields.Float(
            load_default=model.DEFAULTS["test_size"],
            validate=validate.Range(min=0.05, max=0.5),
            metadata={"description": "Share of the data set held out to measure accuracy."},
        ),
        "seed": fields.Int(
            load_default=model.DEFAULTS["seed"],
            validate=validate.Range(min=0, max=2**31 - 1),
            metadata={"description": "Seed of the train/test split."},
        ),
    }


def train(
    classifier: str = model.DEFAULTS["classifier"],
    C: float = model.DEFAULTS["C"],  # noqa: N803 (the usual name of the argument)
    test_size: float = model.DEFAULTS["test_size"],
    seed: int = model.DEFAULTS["seed"],
) -> dict[str, Any]:
    """Fit, keep the model for predict, and answer with the held-out accuracy."""
    estimator, report = model.fit(classifier, C, test_size, seed)
    path = _trained.save(estimator, report)
    return {**report, "saved_to": str(path)}


def _uploaded(image: Any) -> tuple[str, str]:
    """The upload's path on disk and the name to show: DEEPaaS passes an ``UploadedFile``
    (``filename`` is the temporary path, ``original_filename`` the sender's); a plain path
    works too, for calling the function directly."""
    if isinstance(image, str | os.PathLike):
        return os.fspath(image), os.path.basename(os.fspath(image))
    path = getattr(image, "filename", None)
    if not path:
        raise model.ImageError("image: expected an uploaded file")
    return str(path), str(getattr(image, "original_filename", None) or "the upload")
