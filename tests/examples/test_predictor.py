"""``store.Predictor``: a logistic regression answers through ONNX Runtime, and only when it
gives scikit-learn's probabilities; everything else, and any doubt, answers in scikit-learn."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import pytest

from agora.examples.digits import model as digits_model
from agora.examples.iris import model as iris_model
from agora.examples.store import Predictor, TrainedModel


@pytest.fixture(scope="module")
def iris_fits() -> dict[str, Any]:
    """Each iris classifier, fitted once for the module (tests must not change them)."""
    return {c: iris_model.fit(c)[0] for c in iris_model.CLASSIFIERS}


def assert_same_answers(predictor: Predictor, estimator: Any, x: np.ndarray) -> None:
    got = predictor.predict_proba(x)
    want = estimator.predict_proba(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(predictor.classes_, estimator.classes_)


def test_iris_logistic_regression_runs_in_onnxruntime(iris_fits: dict[str, Any]) -> None:
    estimator = iris_fits["logistic_regression"]
    x = iris_model.sample()
    predictor = Predictor(estimator, x)
    assert predictor.runtime == "onnxruntime"
    assert_same_answers(predictor, estimator, x)
    # One row at a time, as the API asks (a (1, 4) array), and the same answer again.
    for row in x[::17]:
        assert_same_answers(predictor, estimator, row[np.newaxis, :])


def test_digits_logistic_regression_runs_in_onnxruntime() -> None:
    estimator, report = digits_model.fit("logistic_regression")
    assert report["classifier"] == "logistic_regression"
    x = digits_model.sample()
    predictor = Predictor(estimator, x)
    assert predictor.runtime == "onnxruntime"
    assert_same_answers(predictor, estimator, x)
    assert_same_answers(predictor, estimator, x[:1])


def test_onnxruntime_takes_any_layout_and_dtype(iris_fits: dict[str, Any]) -> None:
    """A Fortran-ordered, float32 or list input is made into what the ONNX graph expects."""
    estimator = iris_fits["logistic_regression"]
    x = iris_model.sample()
    predictor = Predictor(estimator, x)
    assert predictor.runtime == "onnxruntime"
    want = estimator.predict_proba(x)
    np.testing.assert_allclose(predictor.predict_proba(np.asfortranarray(x)), want, atol=1e-9)
    np.testing.assert_allclose(predictor.predict_proba(x[:, :]), want, atol=1e-9)
    np.testing.assert_allclose(
        predictor.predict_proba(x.tolist()), estimator.predict_proba(x), atol=1e-9
    )
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(
        predictor.predict_proba(x32), estimator.predict_proba(x32.astype(np.float64)), atol=1e-9
    )


@pytest.mark.parametrize("classifier", ["knn", "decision_tree"])
def test_other_iris_classifiers_run_in_scikit_learn(
    iris_fits: dict[str, Any], classifier: str
) -> None:
    estimator = iris_fits[classifier]
    x = iris_model.sample()
    predictor = Predictor(estimator, x)
    assert predictor.runtime == "scikit-learn"
    np.testing.assert_array_equal(predictor.predict_proba(x), estimator.predict_proba(x))
    np.testing.assert_array_equal(predictor.classes_, estimator.classes_)


def test_without_a_sample_it_runs_in_scikit_learn(iris_fits: dict[str, Any]) -> None:
    estimator = iris_fits["logistic_regression"]
    predictor = Predictor(estimator)
    assert predictor.runtime == "scikit-learn"
    x = iris_model.sample()
    np.testing.assert_array_equal(predictor.predict_proba(x), estimator.predict_proba(x))


@pytest.mark.parametrize("missing", ["onnxruntime", "skl2onnx"])
def test_without_the_packages_it_runs_in_scikit_learn(
    iris_fits: dict[str, Any], monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` raises ImportError
    with pytest.raises(ImportError):
        __import__(missing)
    estimator = iris_fits["logistic_regression"]
    x = iris_model.sample()
    predictor = Predictor(estimator, x)
    assert predictor.runtime == "scikit-learn"
    np.testing.assert_array_equal(predictor.predict_proba(x), estimator.predict_proba(x))


@pytest.mark.parametrize("offset", [0.01, 1e-7])
def test_a_conversion_that_disagrees_with_scikit_learn_is_refused(
    monkeypatch: pytest.MonkeyPatch, offset: float
) -> None:
    """The real pipeline is converted (and its graph run), but scikit-learn's answers on the
    sample differ from the graph's by more than 1e-9: scikit-learn answers."""
    import skl2onnx

    estimator, _ = iris_model.fit("logistic_regression")  # its own: it is patched below
    true_proba = estimator.predict_proba
    converted: list[Any] = []
    real_to_onnx = skl2onnx.to_onnx

    def to_onnx(model: Any, *args: Any, **kwargs: Any) -> Any:
        converted.append(model)
        return real_to_onnx(model, *args, **kwargs)

    def shifted(x: Any) -> np.ndarray:
        return np.asarray(true_proba(x)) + offset

    monkeypatch.setattr(skl2onnx, "to_onnx", to_onnx)
    monkeypatch.setattr(estimator, "predict_proba", shifted)
    x = iris_model.sample()
    predictor = Predictor(estimator, x)
    assert converted == [estimator]  # the conversion itself succeeded ...
    assert predictor.runtime == "scikit-learn"  # ... and was refused
    np.testing.assert_array_equal(predictor.predict_proba(x), true_proba(x) + offset)


def test_an_agreeing_patch_is_still_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the test above: patching predict_proba alone does not stop ONNX."""
    estimator, _ = iris_model.fit("logistic_regression")
    true_proba = estimator.predict_proba
    monkeypatch.setattr(estimator, "predict_proba", lambda x: true_proba(x) + 1e-12)
    assert Predictor(estimator, iris_model.sample()).runtime == "onnxruntime"


def test_a_failed_conversion_runs_in_scikit_learn(
    iris_fits: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import skl2onnx

    def to_onnx(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no converter")

    monkeypatch.setattr(skl2onnx, "to_onnx", to_onnx)
    estimator = iris_fits["logistic_regression"]
    predictor = Predictor(estimator, iris_model.sample())
    assert predictor.runtime == "scikit-learn"


def test_trained_model_predictor_is_made_once_per_load() -> None:
    fits: list[str] = []

    def fit_default() -> tuple[Any, dict[str, Any]]:
        fits.append("logistic_regression")
        return iris_model.fit("logistic_regression")

    trained = TrainedModel("iris", fit_default, iris_model.sample)
    predictor, report = trained.predictor()
    assert fits == ["logistic_regression"]  # no model yet: the default was fitted and saved
    assert trained.path.exists()
    assert str(trained.path).startswith(os.environ["AGORA_MODULE_DATA"])
    assert predictor.runtime == "onnxruntime"
    assert report["classifier"] == "logistic_regression"
    again, report_again = trained.predictor()
    assert again is predictor
    assert report_again is report

    # Another process trains a knn and replaces the file.
    before = os.stat(trained.path)
    other = TrainedModel("iris", fit_default, iris_model.sample)
    knn, knn_report = iris_model.fit("knn")
    other.save(knn, knn_report)
    after = os.stat(trained.path)
    assert (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)

    predictor_knn, report_knn = trained.predictor()
    assert predictor_knn is not predictor
    assert predictor_knn.runtime == "scikit-learn"
    assert report_knn["classifier"] == "knn"
    assert trained.predictor()[0] is predictor_knn
    x = iris_model.sample()
    np.testing.assert_array_equal(
        predictor_knn.predict_proba(x), predictor_knn.estimator.predict_proba(x)
    )
    np.testing.assert_array_equal(predictor_knn.predict_proba(x), knn.predict_proba(x))
    assert fits == ["logistic_regression"]  # nothing fitted again

    # And back to a logistic regression: ONNX again.
    other.save(*iris_model.fit("logistic_regression"))
    predictor_lr, report_lr = trained.predictor()
    assert predictor_lr.runtime == "onnxruntime"
    assert report_lr["classifier"] == "logistic_regression"


def test_trained_model_without_sample_runs_in_scikit_learn() -> None:
    trained = TrainedModel("iris", lambda: iris_model.fit("logistic_regression"))
    predictor, _ = trained.predictor()
    assert predictor.runtime == "scikit-learn"


def test_example_modules_answer_through_onnx_by_default(trained: Any) -> None:
    """The iris and digits modules' default models (logistic regressions) use ONNX Runtime."""
    from agora.examples.digits import api as digits_api
    from agora.examples.iris import api as iris_api

    for api in (iris_api, digits_api):
        predictor, report = api._trained.predictor()
        assert report["classifier"] == "logistic_regression"
        assert predictor.runtime == "onnxruntime", api.__name__
