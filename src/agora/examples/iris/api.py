"""The iris module's DEEPaaS v2 functions: predict the species from four measurements, train."""

from __future__ import annotations

from typing import Any

import numpy as np
from webargs import fields, validate

from agora.examples.iris import model
from agora.examples.metadata import deepaas_metadata
from agora.examples.store import TrainedModel

NAME = "iris"

_trained = TrainedModel(NAME, model.fit, model.sample)

# The JSON answer of predict (DEEPaaS checks answers against it and documents it).
schema = {
    "species": fields.Str(required=True, metadata={"description": "The predicted species."}),
    "probability": fields.Float(metadata={"description": "The predicted species' probability."}),
    "probabilities": fields.Dict(
        keys=fields.Str(),
        values=fields.Float(),
        metadata={"description": "The probability of each species."},
    ),
    "classifier": fields.Str(metadata={"description": "The kind of model that answered."}),
    "accuracy": fields.Float(metadata={"description": "The model's held-out accuracy."}),
}


def get_metadata() -> dict[str, Any]:
    return deepaas_metadata(NAME, __package__ or "agora.examples.iris")


def warm() -> None:
    """Load the trained model, or train the default one if there is none yet."""
    _trained.predictor()


def get_predict_args() -> dict[str, fields.Field]:
    return {
        name: fields.Float(
            required=True,
            validate=validate.Range(min=low, max=high),
            metadata={"description": f"{label} in cm ({low:g} to {high:g})."},
        )
        for name, label, low, high in model.FEATURES
    }


def predict(
    sepal_length: float, sepal_width: float, petal_length: float, petal_width: float
) -> dict[str, Any]:
    row = np.array([[sepal_length, sepal_width, petal_length, petal_width]], dtype=np.float64)
    estimator, report = _trained.predictor()
    probabilities = estimator.predict_proba(row)[0]
    best = int(probabilities.argmax())
    species = report["species"]
    return {
        "species": species[int(estimator.classes_[best])],
        "probability": round(float(probabilities[best]), 4),
        "probabilities": {
            species[int(c)]: round(float(p), 4)
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
        "test_size": fields.Float(
            load_default=model.DEFAULTS["test_size"],
            validate=validate.Range(min=0.1, max=0.5),
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
    test_size: float = model.DEFAULTS["test_size"],
    seed: int = model.DEFAULTS["seed"],
) -> dict[str, Any]:
    """Fit, keep the model for predict, and answer with the held-out accuracy."""
    estimator, report = model.fit(classifier, test_size, seed)
    path = _trained.save(estimator, report)
    return {**report, "saved_to": str(path)}
