"""The trained model of an example module: a fitted estimator and its training report on disk,
and the :class:`Predictor` that answers with it."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from agora.examples import MODULE_DATA_ENV, module_data_dir

Report = dict[str, Any]


class TrainedModel:
    """One file, ``<module data>/model.joblib``, holding ``{"estimator": …, "report": …}``.

    ``get()`` loads it, and loads it again when the file has changed since (a training in
    another worker process replaces it); when there is none yet it calls ``fit_default`` and
    saves what that returns, so predict works before anyone has trained. Writes go to a
    temporary file renamed over the old one: a reader never sees half a model.
    """

    FILENAME = "model.joblib"

    def __init__(
        self,
        module: str,
        fit_default: Callable[[], tuple[Any, Report]],
        sample: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self.module = module
        self._fit_default = fit_default
        self._sample = sample
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Report] | None = None
        self._predictor: tuple[Any, Predictor] | None = None  # (estimator, its predictor)
        self._stamp: tuple[Path, int, int] | None = None
        self._root: str | None = None

    @property
    def path(self) -> Path:
        return module_data_dir(self.module) / self.FILENAME

    def get(self) -> tuple[Any, Report]:
        with self._lock:
            # The common case, checked without building the path or making its folder: the
            # loaded model, its file unchanged and $AGORA_MODULE_DATA too.
            if self._loaded is not None and self._stamp is not None:
                known, _, _ = self._stamp
                if self._root == os.environ.get(MODULE_DATA_ENV) and _stamp(known) == self._stamp:
                    return self._loaded
            self._root = os.environ.get(MODULE_DATA_ENV)
            path = self.path
            stamp = _stamp(path)
            if stamp is None:
                estimator, report = self._fit_default()
                self._write(path, estimator, report)
                return estimator, report
            if self._loaded is None or stamp != self._stamp:
                data = joblib.load(path)
                self._loaded, self._stamp = (data["estimator"], data["report"]), stamp
            return self._loaded

    def predictor(self) -> tuple[Predictor, Report]:
        """Like :meth:`get`, with the estimator as a :class:`Predictor` (made once per load)."""
        estimator, report = self.get()
        cached = self._predictor
        if cached is None or cached[0] is not estimator:
            sample = self._sample() if self._sample is not None else None
            cached = (estimator, Predictor(estimator, sample))
            self._predictor = cached
        return cached[1], report

    def save(self, estimator: Any, report: Report) -> Path:
        with self._lock:
            path = self.path
            self._write(path, estimator, report)
            return path

    def _write(self, path: Path, estimator: Any, report: Report) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                joblib.dump({"estimator": estimator, "report": report}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._loaded, self._stamp = (estimator, report), _stamp(path)
        self._root = os.environ.get(MODULE_DATA_ENV)


def _stamp(path: Path) -> tuple[Path, int, int] | None:
    """Path, inode and modification time: a rename over the file changes the inode, and the
    path changes with $AGORA_MODULE_DATA."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return path, st.st_ino, st.st_mtime_ns


class Predictor:
    """A fitted classifier's ``predict_proba``, through ONNX Runtime where that is faster.

    scikit-learn checks its input on every call, which costs a single-row prediction about
    0.6 ms; the same linear model run by ONNX Runtime (converted with skl2onnx) answers in
    about 25 µs. A pipeline ending in a logistic regression is converted when both packages
    are installed, and used only if it gives scikit-learn's probabilities (to 1e-9) on
    ``sample``; anything else (trees, neighbours, a failed conversion) runs in scikit-learn.
    """

    OPSETS = {"": 18, "ai.onnx.ml": 3}

    def __init__(self, estimator: Any, sample: np.ndarray | None = None) -> None:
        self.estimator = estimator
        self.classes_ = estimator.classes_
        self._session: Any = None
        self.runtime = "scikit-learn"
        if sample is not None and _linear(estimator):
            self._session = _onnx_session(estimator, np.asarray(sample, dtype=np.float64))
            if self._session is not None:
                self.runtime = "onnxruntime"

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:
            return np.asarray(self.estimator.predict_proba(x))
        rows = np.ascontiguousarray(x, dtype=np.float64)
        return np.asarray(self._session.run(["probabilities"], {"X": rows})[0])


def _linear(estimator: Any) -> bool:
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # pragma: no cover - scikit-learn made the estimator
        return False
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return isinstance(final, LogisticRegression)


def _onnx_session(estimator: Any, sample: np.ndarray) -> Any:
    try:
        import onnxruntime
        from skl2onnx import to_onnx
    except ImportError:
        return None
    try:
        graph = to_onnx(
            estimator, sample[:1], options={"zipmap": False}, target_opset=Predictor.OPSETS
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one worker process per core
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        got = session.run(["probabilities"], {"X": sample})[0]
    except Exception:  # any converter or runtime failure: scikit-learn answers instead
        return None
    if not np.allclose(got, estimator.predict_proba(sample), rtol=0, atol=1e-9):
        return None
    return session
