"""The digits module called as DEEPaaS calls it: plain functions, uploads as files on disk."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import marshmallow
import pytest
from PIL import Image

from agora.examples import digits
from agora.examples.digits.model import ImageError
from tests.examples.pictures import digit_png, pen_on_transparent_png


class Upload:
    """What DEEPaaS passes for a file argument (its ``UploadedFile`` has these fields)."""

    def __init__(self, path: Path, original_filename: str) -> None:
        self.name = "image"
        self.filename = str(path)
        self.content_type = "application/octet-stream"
        self.original_filename = original_filename


def upload(tmp_path: Path, data: bytes, name: str) -> Upload:
    path = tmp_path / f"upload-{name}"
    path.write_bytes(data)
    return Upload(path, name)


def test_warm_trains_the_default_model_when_there_is_none(module_data: Path) -> None:
    digits.warm()
    assert (module_data / "digits" / "model.joblib").is_file()


def test_model_data_defaults_to_a_folder_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGORA_MODULE_DATA")
    monkeypatch.chdir(tmp_path)
    digits.warm()
    assert (tmp_path / "agora-module-data" / "digits" / "model.joblib").is_file()


@pytest.mark.usefixtures("trained")
def test_predict_reads_the_digit_in_a_png(tmp_path: Path) -> None:
    png, digit = digit_png(3)
    answer = digits.predict(image=upload(tmp_path, png, "three.png"), accept="application/json")
    assert isinstance(answer, dict)
    assert answer["digit"] == digit
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=0.01)
    assert set(answer["probabilities"]) == {str(d) for d in range(10)}
    marshmallow.Schema.from_dict(digits.schema)().load(answer)  # as DEEPaaS checks it


@pytest.mark.usefixtures("trained")
@pytest.mark.parametrize("picture", ["dark on light", "pen on transparent"])
def test_predict_reads_digits_drawn_other_ways(tmp_path: Path, picture: str) -> None:
    right = 0
    for index in range(20):
        if picture == "dark on light":
            png, digit = digit_png(index, size=40, dark_on_light=True)
        else:
            png, digit = pen_on_transparent_png(index)
        answer = digits.predict(image=upload(tmp_path, png, f"{index}.png"))
        assert isinstance(answer, dict)
        right += answer["digit"] == digit
    assert right >= 17


@pytest.mark.usefixtures("trained")
def test_predict_answers_the_8x8_image_the_model_sees_as_png(tmp_path: Path) -> None:
    png, _ = digit_png(5, size=200)
    answer = digits.predict(image=upload(tmp_path, png, "five.png"), accept="image/png")
    assert isinstance(answer, bytes)
    with Image.open(io.BytesIO(answer)) as im:
        assert im.format == "PNG"
        assert im.size == (64, 64)


@pytest.mark.usefixtures("trained")
def test_a_text_file_as_the_image_is_refused_with_a_message_for_a_person(tmp_path: Path) -> None:
    notes = upload(tmp_path, b"shopping list: milk, eggs\n", "notes.txt")
    with pytest.raises(ImageError) as caught:
        digits.predict(image=notes)
    assert str(caught.value).startswith("image: notes.txt is not a PNG/JPEG image")
    assert caught.value.status == 400
    assert isinstance(caught.value, ValueError)
    # DEEPaaS runs predict in a worker process and sends the exception back pickled.
    again = pickle.loads(pickle.dumps(caught.value))
    assert (type(again), str(again), again.text) == (ImageError, str(caught.value), again.message)


@pytest.mark.usefixtures("trained")
def test_a_blank_image_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    Image.new("L", (32, 32), 255).save(out, format="PNG")
    with pytest.raises(ImageError, match="blank"):
        digits.predict(image=upload(tmp_path, out.getvalue(), "white.png"))


@pytest.mark.usefixtures("trained")
def test_train_keeps_the_new_model_for_predict(tmp_path: Path, module_data: Path) -> None:
    result = digits.train(classifier="knn", C=1.0, test_size=0.2, seed=1)
    assert result["classifier"] == "knn"
    assert result["accuracy"] > 0.9
    assert result["test_samples"] == 360
    assert result["seconds"] < 1  # knn: a few hundredths
    assert Path(result["saved_to"]) == module_data / "digits" / "model.joblib"
    png, digit = digit_png(7)
    answer = digits.predict(image=upload(tmp_path, png, "seven.png"))
    assert isinstance(answer, dict)
    assert (answer["classifier"], answer["accuracy"]) == ("knn", result["accuracy"])


@pytest.mark.usefixtures("trained")
def test_a_model_trained_by_another_process_is_picked_up(tmp_path: Path) -> None:
    digits.warm()  # loads the default model
    from agora.examples.digits import model
    from agora.examples.store import TrainedModel

    # Another worker (another TrainedModel, as in another process) trains and saves.
    TrainedModel("digits", model.fit).save(*model.fit("knn"))
    png, _ = digit_png(9)
    answer = digits.predict(image=upload(tmp_path, png, "nine.png"))
    assert isinstance(answer, dict)
    assert answer["classifier"] == "knn"


def test_arguments_load_with_their_defaults_and_ranges() -> None:
    train_args = marshmallow.Schema.from_dict(digits.get_train_args())()
    assert train_args.load({}) == {
        "classifier": "logistic_regression",
        "C": 1.0,
        "test_size": 0.25,
        "seed": 0,
    }
    with pytest.raises(marshmallow.ValidationError) as caught:
        train_args.load({"classifier": "deep_net", "test_size": 0.9})
    assert set(caught.value.messages) == {"classifier", "test_size"}
    predict_args = digits.get_predict_args()
    assert predict_args["image"].metadata["type"] == "file"
    assert predict_args["image"].required
    assert predict_args["accept"].validate.choices == ["application/json", "image/png"]


def test_metadata_comes_from_the_catalog_entry() -> None:
    meta = digits.get_metadata()
    assert meta["name"] == "digits"
    assert meta["title"] == "Handwritten digits classifier"
    assert meta["license"] == "Apache-2.0"


@pytest.mark.parametrize("classifier", ["logistic_regression", "svc", "knn"])
def test_every_classifier_trains_in_about_a_second(classifier: str) -> None:
    result = digits.train(classifier=classifier)
    assert result["accuracy"] > 0.95
    assert result["seconds"] < 3  # about 0.5 s for svc on an idle core; the CI machine is shared
