"""The iris classifier: three species told apart by four measurements of the flower."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from agora.examples.errors import BadInput

CLASSIFIERS = ("logistic_regression", "knn", "decision_tree")
DEFAULTS: dict[str, Any] = {"classifier": "logistic_regression", "test_size": 0.3, "seed": 0}
# The arguments of predict, in the data set's column order: (name, what it is, lowest, highest)
# in centimetres. The data set's values lie well inside these ranges.
FEATURES = (
    ("sepal_length", "Sepal length", 3.0, 10.0),
    ("sepal_width", "Sepal width", 1.0, 6.0),
    ("petal_length", "Petal length", 0.5, 8.0),
    ("petal_width", "Petal width", 0.05, 3.5),
)


def make_classifier(classifier: str, seed: int) -> Any:
    # scikit-learn takes seconds to import: a process that only predicts loads it with the
    # model (unpickling), so the module itself imports it only to fit.
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    if classifier == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if classifier == "knn":
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5))
    if classifier == "decision_tree":
        return DecisionTreeClassifier(max_depth=4, random_state=seed)
    raise BadInput(f"classifier: one of {', '.join(CLASSIFIERS)}, not {classifier!r}")


def sample() -> Any:
    """The data set's inputs: a predictor is checked against them (see ``store.Predictor``)."""
    from sklearn.datasets import load_iris

    return load_iris().data


def fit(
    classifier: str = DEFAULTS["classifier"],
    test_size: float = DEFAULTS["test_size"],
    seed: int = DEFAULTS["seed"],
) -> tuple[Any, dict[str, Any]]:
    """Fit on a split of the data set; the report holds the accuracy on the held-out part."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    started = time.perf_counter()
    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=test_size, random_state=seed, stratify=iris.target
    )
    estimator = make_classifier(classifier, seed)
    estimator.fit(x_train, y_train)
    report = {
        "classifier": classifier,
        "test_size": test_size,
        "seed": seed,
        "accuracy": round(float(estimator.score(x_test, y_test)), 4),
        "train_samples": len(y_train),
        "test_samples": len(y_test),
        "species": [str(s) for s in iris.target_names],
        "seconds": round(time.perf_counter() - started, 3),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return estimator, report
