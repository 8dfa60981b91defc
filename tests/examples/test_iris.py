"""The iris module called as DEEPaaS calls it: plain functions with the parsed arguments."""

from __future__ import annotations

from pathlib import Path

import marshmallow
import pytest

from agora.examples import iris
from agora.examples.errors import BadInput

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.8, "petal_width": 2.2}


def test_warm_trains_the_default_model_when_there_is_none(module_data: Path) -> None:
    iris.warm()
    assert (module_data / "iris" / "model.joblib").is_file()


@pytest.mark.usefixtures("trained")
@pytest.mark.parametrize(("flower", "species"), [(SETOSA, "setosa"), (VIRGINICA, "virginica")])
def test_predict_names_the_species(flower: dict[str, float], species: str) -> None:
    answer = iris.predict(**flower)
    assert answer["species"] == species
    assert set(answer["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert answer["probability"] == max(answer["probabilities"].values())
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=0.01)
    marshmallow.Schema.from_dict(iris.schema)().load(answer)  # as DEEPaaS checks it


@pytest.mark.usefixtures("trained")
def test_train_keeps_the_new_model_for_predict(module_data: Path) -> None:
    result = iris.train(classifier="decision_tree", test_size=0.2, seed=3)
    assert (result["classifier"], result["test_samples"]) == ("decision_tree", 30)
    assert result["accuracy"] > 0.8
    assert result["seconds"] < 1
    assert Path(result["saved_to"]) == module_data / "iris" / "model.joblib"
    assert iris.predict(**SETOSA)["classifier"] == "decision_tree"


def test_an_unknown_classifier_is_refused_by_name() -> None:
    with pytest.raises(BadInput, match="classifier: one of logistic_regression, knn"):
        iris.train(classifier="deep_net")


def test_measurements_are_required_and_kept_in_range() -> None:
    args = marshmallow.Schema.from_dict(iris.get_predict_args())()
    assert args.load({k: str(v) for k, v in SETOSA.items()}) == SETOSA  # form fields are text
    with pytest.raises(marshmallow.ValidationError) as caught:
        args.load({"sepal_length": 40, "sepal_width": 3.5, "petal_length": 1.4})
    assert set(caught.value.messages) == {"sepal_length", "petal_width"}
    train_args = marshmallow.Schema.from_dict(iris.get_train_args())()
    assert train_args.load({}) == {"classifier": "logistic_regression", "test_size": 0.3, "seed": 0}
