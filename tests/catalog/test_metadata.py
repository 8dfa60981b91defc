"""Reading both AI4OS metadata formats into one entry, and naming every problem by its field."""

from __future__ import annotations

import pytest

from agora.catalog.metadata import MetadataError, Problem, parse
from tests.catalog.documents import v1, v2


def _problems(doc: object, name: str | None = "mods") -> list[str]:
    with pytest.raises(MetadataError) as err:
        parse(doc, file="mods/ai4-metadata.yml", name=name)
    return [str(p) for p in err.value.problems]


def test_v2_document_maps_onto_the_entry() -> None:
    spec = parse(v2(), file="mods/ai4-metadata.yml", name="mods")
    assert spec.name == "mods"
    assert spec.metadata_format == "ai4-v2" and spec.metadata_version == "2.0.0"
    assert spec.title == "DEEP OC Massive Online Data Streams"
    assert spec.tasks == ["Anomaly Detection", "Time Series"]
    assert spec.data_types == ["Tabular"]
    assert spec.libraries == ["TensorFlow", "Keras"]
    assert spec.links["source"] == "https://github.com/deephdc/DEEP-OC-mods"
    assert spec.links["doi"] == "https://doi.org/10.5281/zenodo.1234567"
    assert spec.links["docker_image"] == "deephdc/deep-oc-mods"
    assert spec.resources["training"] == {
        "cpu": 4,
        "gpu": 1,
        "memory_MB": 8000,
        "gpu_memory_MB": 8000,
    }
    assert spec.dates == {"created": "2019-02-19", "updated": "2024-02-19"}
    # Only a Docker image: listed, but not runnable here, and the reason says so.
    assert spec.run.kind == "none"
    assert "Docker image" in spec.run.reason and "deephdc/deep-oc-mods" in spec.run.reason


def test_resource_keys_the_schema_does_not_name_are_ignored() -> None:
    doc = v2()
    doc["resources"]["inference"]["tpu"] = 2  # the schema leaves the block open
    doc["resources"]["serving"] = {"cpu": 1}
    spec = parse(doc, file="mods/ai4-metadata.yml", name="mods")
    assert spec.resources["inference"] == {"cpu": 1, "memory_MB": 2000}
    assert "serving" not in spec.resources


def test_v1_document_maps_onto_the_entry() -> None:
    spec = parse(v1(), file="image-classification/metadata.json", name="image-classification")
    assert spec.metadata_format == "deep-v1"
    assert spec.description.startswith("The deep learning revolution")
    assert "\n\nThis module comes pre-trained" in spec.description  # paragraphs joined
    assert spec.tags[:2] == ["tensorflow", "docker"]
    assert spec.license == "MIT"
    assert spec.links == {
        "source": "https://github.com/deephdc/image-classification-tf",
        "docker_image": "deephdc/deep-oc-image-classification-tf",
        "dataset": "http://www.image-net.org/challenges/LSVRC/2012/",
        "weights": "https://api.cloud.ifca.es:8080/swift/v1/imagenet-tf/",
        "citation": "https://doi.org/10.1016/j.compag.2020.105445",
    }
    assert spec.dates == {"created": "2019-01-01"}
    assert spec.run.kind == "none"


def test_agora_entry_point_runs_with_the_deepaas_template() -> None:
    doc = v2(
        agora={
            "entry_point": "mods",
            "package": "mods",
            "authors": ["Giang Nguyen", {"name": "Stefan Dlugolinsky", "affiliation": "IISAS"}],
            "license": "Apache-2.0",
            "versions": [{"version": "1.0.0", "date": "2024-02-19", "notes": "First release"}],
        }
    )
    spec = parse(doc, file="f", name="mods")
    assert spec.run.kind == "deepaas"
    assert spec.run.template == "deepaas-model"
    assert spec.run.inputs == {"module": "mods"}
    assert spec.run.entry_point == "mods" and spec.run.package == "mods"
    assert spec.authors == [
        {"name": "Giang Nguyen"},
        {"name": "Stefan Dlugolinsky", "affiliation": "IISAS"},
    ]
    assert spec.license == "Apache-2.0"
    assert spec.versions == [{"version": "1.0.0", "date": "2024-02-19", "notes": "First release"}]


def test_agora_template_with_inputs_and_a_name_of_its_own() -> None:
    doc = v1(agora={"name": "lab", "template": "jupyterlab", "inputs": {"memory_mb": 2048}})
    spec = parse(doc, file="f", name="dir-name")
    assert spec.name == "lab"
    assert (spec.run.kind, spec.run.template, spec.run.inputs) == (
        "template",
        "jupyterlab",
        {"memory_mb": 2048},
    )


def test_every_problem_is_named_with_its_field_path() -> None:
    links = {"source_code": "github.com/x", "docker_image": "x/y", "dataset": "ftp://x"}
    doc = v2(links=links, tasks=["Anomaly Detection", "Telepathy"], tags=None, keywords=["x"])
    doc["resources"]["inference"]["memory_MB"] = -1
    problems = _problems(doc)
    assert "mods/ai4-metadata.yml: links.source_code: not a URL (http:// or https://)" in problems
    assert "mods/ai4-metadata.yml: links.dataset: not a URL (http:// or https://)" in problems
    assert any(
        p.startswith("mods/ai4-metadata.yml: tasks[1]: 'Telepathy' is not one of") for p in problems
    )
    assert "mods/ai4-metadata.yml: tags: required" in problems
    assert any(
        p.startswith("mods/ai4-metadata.yml: resources.inference.memory_MB:") for p in problems
    )
    assert (
        "mods/ai4-metadata.yml: keywords: a version 1 field, not allowed with metadata_version 2"
        in problems
    )
    assert len(problems) == 6


def test_agora_block_problems() -> None:
    doc = v2(agora={"entry_point": "x", "template": "jupyterlab", "colour": "red"})
    assert _problems(doc) == ["mods/ai4-metadata.yml: agora.colour: not a known field"]
    doc = v2(agora={"entry_point": "x", "template": "jupyterlab"})
    assert _problems(doc) == [
        "mods/ai4-metadata.yml: agora: give entry_point or template, not both"
    ]
    assert _problems(v2(agora={"name": "Not OK"}))[0].startswith(
        "mods/ai4-metadata.yml: agora.name: String should match pattern"
    )
    assert _problems(v2(), name=None) == [
        "mods/ai4-metadata.yml: agora.name: required: the module's name in the catalog"
    ]
    assert _problems(v2(), name="sources") == [
        "mods/ai4-metadata.yml: agora.name: 'sources' is reserved; choose another"
    ]


def test_unknown_versions_and_non_mappings_are_refused() -> None:
    assert _problems(v2(metadata_version="3.0.0")) == [
        "mods/ai4-metadata.yml: metadata_version: unsupported version '3.0.0' (use 2.x.y)"
    ]
    assert _problems(["not", "a", "mapping"]) == [
        "mods/ai4-metadata.yml: the document must be a mapping of fields"
    ]
    assert str(Problem("f", "", "broken")) == "f: broken"


def test_v1_problems_are_named_too() -> None:
    doc = v1(description={"not": "text"}, sources={"code": "github.com/deephdc/x"}, title=None)
    with pytest.raises(MetadataError) as err:
        parse(doc, file="old/metadata.json", name="old")
    assert sorted(str(p) for p in err.value.problems) == [
        "old/metadata.json: description: Input should be a valid string",
        "old/metadata.json: sources.code: not a URL (http:// or https://)",
        "old/metadata.json: title: Input should be a valid string",
    ]
