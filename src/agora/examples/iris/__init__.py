"""Iris species classifier (DEEPaaS v2 module): scikit-learn's bundled iris measurements.

``predict`` takes the four measurements of a flower in centimetres (sepal length and width,
petal length and width) and answers with the species and each species' probability. ``train``
fits a new model in well under a second and keeps it.
"""

from agora.examples.iris.api import (
    get_metadata,
    get_predict_args,
    get_train_args,
    predict,
    schema,
    train,
    warm,
)

__all__ = [
    "get_metadata",
    "get_predict_args",
    "get_train_args",
    "predict",
    "schema",
    "train",
    "warm",
]
