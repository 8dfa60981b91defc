"""The example modules are genuine DEEPaaS modules: the real ``deepaas-run`` (DEEPaaS 2.6, in
.venv-deepaas) finds them by their entry points and serves them over HTTP."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.examples.pictures import digit_png
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DEEPAAS_RUN = ROOT / ".venv-deepaas" / "bin" / "deepaas-run"
MODULES = ("digits", "iris")


@pytest.fixture(scope="module")
def deepaas(
    tmp_path_factory: pytest.TempPathFactory, default_models: Path
) -> Iterator[dict[str, str]]:
    """``deepaas-run --model-name M`` for each module, side by side: M → its /v2 base URL."""
    if not DEEPAAS_RUN.exists():
        pytest.fail(f"{DEEPAAS_RUN.relative_to(ROOT)} is missing: run `make deepaas-venv`")
    tmp = tmp_path_factory.mktemp("deepaas")
    data = tmp / "module-data"
    shutil.copytree(default_models, data)  # the modules warm up without training
    uploads = tmp / "uploads"  # DEEPaaS keeps every upload in a temporary file it never removes
    uploads.mkdir()
    env = {**os.environ, "AGORA_MODULE_DATA": str(data), "TMPDIR": str(uploads)}
    servers: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    with contextlib.ExitStack() as stack:
        for module in MODULES:
            port = free_port()
            log = tmp / f"{module}.log"
            out = stack.enter_context(log.open("wb"))
            proc = subprocess.Popen(
                [str(DEEPAAS_RUN), "--model-name", module,
                 "--listen-ip", "127.0.0.1", "--listen-port", str(port)],
                cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            stack.callback(_stop, proc)
            servers[module] = (proc, port, log)
        urls = {m: _wait_ready(*servers[m]) for m in MODULES}
        yield urls


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60) -> str:
    url = f"http://127.0.0.1:{port}/v2"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"deepaas-run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/models/", timeout=2).status_code == 200:
                return url
        time.sleep(0.1)
    pytest.fail(f"deepaas-run not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("module", MODULES)
def test_deepaas_lists_the_module_with_its_metadata(deepaas: dict[str, str], module: str) -> None:
    r = httpx.get(deepaas[module] + "/models/")
    assert r.status_code == 200, r.text
    (listed,) = r.json()["models"]
    assert listed["id"] == listed["name"] == module
    assert listed["license"] == "Apache-2.0"
    assert listed["title"]


def test_digits_predicts_an_uploaded_png(deepaas: dict[str, str]) -> None:
    png, digit = digit_png(3)
    r = httpx.post(
        deepaas["digits"] + "/models/digits/predict/",
        files={"image": ("three.png", png, "image/png")},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["digit"] == digit


def test_digits_answers_the_image_the_model_sees_when_png_is_accepted(
    deepaas: dict[str, str],
) -> None:
    png, _ = digit_png(4, size=120)
    r = httpx.post(
        deepaas["digits"] + "/models/digits/predict/",
        files={"image": ("four.png", png, "image/png")},
        headers={"Accept": "image/png"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (64, 64)


def test_digits_refuses_a_text_file_with_a_message_for_a_person(deepaas: dict[str, str]) -> None:
    r = httpx.post(
        deepaas["digits"] + "/models/digits/predict/",
        files={"image": ("notes.txt", b"shopping list: milk, eggs\n", "text/plain")},
        timeout=30,
    )
    assert r.status_code == 400
    assert r.text.startswith("image: notes.txt is not a PNG/JPEG image")


def test_iris_predicts_from_form_fields(deepaas: dict[str, str]) -> None:
    flower = {
        "sepal_length": "6.7",
        "sepal_width": "3.0",
        "petal_length": "5.8",
        "petal_width": "2.2",
    }
    r = httpx.post(deepaas["iris"] + "/models/iris/predict/", data=flower, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["species"] == "virginica"


def test_iris_refuses_a_measurement_out_of_range(deepaas: dict[str, str]) -> None:
    flower = {
        "sepal_length": "67",
        "sepal_width": "3.0",
        "petal_length": "5.8",
        "petal_width": "2.2",
    }
    r = httpx.post(deepaas["iris"] + "/models/iris/predict/", data=flower, timeout=30)
    assert r.status_code == 422
    assert "sepal_length" in r.json()


def test_training_through_deepaas_reports_the_accuracy(deepaas: dict[str, str]) -> None:
    base = deepaas["iris"] + "/models/iris/train/"
    r = httpx.post(base, params={"classifier": "knn", "test_size": "0.2"}, timeout=30)
    assert r.status_code == 200, r.text
    uuid = r.json()["uuid"]
    deadline = time.monotonic() + 20
    while (training := httpx.get(base + uuid, timeout=10).json())["status"] == "running":
        assert time.monotonic() < deadline, training
        time.sleep(0.1)
    assert training["status"] == "done", training
    result = training["result"]["output"]
    assert (result["classifier"], result["test_samples"]) == ("knn", 30)
    assert result["accuracy"] > 0.8
