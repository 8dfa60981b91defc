"""Handwritten digit classifier (DEEPaaS v2 module): scikit-learn's bundled 8×8 digits.

``predict`` takes a picture of one digit (PNG or JPEG, any size, dark on light or light on
dark) and answers with the digit and each digit's probability, or with the 8×8 image the model
sees (``Accept: image/png``). ``train`` fits a new model in under a second and keeps it.
"""

from agora.examples.digits.api import (
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
