"""The trained model of an example module: a fitted estimator and its training report on disk."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib

from agora.examples import module_data_dir

Report = dict[str, Any]


class TrainedModel:
    """One file, ``<module data>/model.joblib``, holding ``{"estimator": …, "report": …}``.

    ``get()`` loads it, and loads it again when the file has changed since (a training in
    another worker process replaces it); when there is none yet it calls ``fit_default`` and
    saves what that returns, so predict works before anyone has trained. Writes go to a
    temporary file renamed over the old one: a reader never sees half a model.
    """

    FILENAME = "model.joblib"

    def __init__(self, module: str, fit_default: Callable[[], tuple[Any, Report]]) -> None:
        self.module = module
        self._fit_default = fit_default
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Report] | None = None
        self._stamp: tuple[Path, int, int] | None = None

    @property
    def path(self) -> Path:
        return module_data_dir(self.module) / self.FILENAME

    def get(self) -> tuple[Any, Report]:
        with self._lock:
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


def _stamp(path: Path) -> tuple[Path, int, int] | None:
    """Path, inode and modification time: a rename over the file changes the inode, and the
    path changes with $AGORA_MODULE_DATA."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return path, st.st_ino, st.st_mtime_ns
