"""Each example module's catalog entry follows the AI4OS metadata schema, version 2."""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import pytest

from agora.examples.metadata import catalog_entry

# The required keys and the closed lists of ai4-metadata's v2 schema (ai4-apps-v2.3.0.json).
REQUIRED = {"metadata_version", "title", "summary", "description", "links", "libraries",
            "tasks", "categories", "tags"}  # fmt: skip
CLOSED = {
    "libraries": {"TensorFlow", "PyTorch", "Keras", "Scikit-learn", "XGBoost", "LightGBM",
                  "CatBoost", "Other"},
    "tasks": {"Computer Vision", "Natural Language Processing", "Time Series",
              "Recommender Systems", "Anomaly Detection", "Regression", "Classification",
              "Clustering", "Dimensionality Reduction", "Generative Models",
              "Graph Neural Networks", "Optimization", "Reinforcement Learning",
              "Transfer Learning", "Uncertainty Estimation", "Other"},
    "categories": {"AI4 pre trained", "AI4 trainable", "AI4 inference", "AI4 tools"},
    "data-type": {"Image", "Text", "Time Series", "Tabular", "Graph", "Audio", "Video", "Other"},
}  # fmt: skip
RESOURCE_KEYS = {"cpu", "gpu", "memory_MB", "gpu_memory_MB", "gpu_compute_capability", "storage_MB"}
RETIRED = {"tosca", "sources", "dataset_url", "cite_url", "date_creation", "keywords"}


@pytest.mark.parametrize("module", ["digits", "iris", "embeddings"])
def test_catalog_entry_follows_ai4_metadata_v2(module: str) -> None:
    entry = catalog_entry(f"agora.examples.{module}")
    assert set(entry) >= REQUIRED
    assert not RETIRED & set(entry)
    assert re.fullmatch(r"2\.\d+\.\d+", entry["metadata_version"])
    for key in ("title", "summary", "description"):
        assert isinstance(entry[key], str) and entry[key].strip()
    assert entry["links"]["source_code"].startswith("https://")
    assert all(v.startswith("https://") for v in entry["links"].values())
    for key, allowed in CLOSED.items():
        values = entry.get(key, [])
        assert len(values) == len(set(values)), key
        assert set(values) <= allowed, key
    assert entry["tags"] and all(isinstance(t, str) for t in entry["tags"])
    assert set(entry["dates"]) == {"created", "updated"}
    for use in entry.get("resources", {}).values():
        assert set(use) <= RESOURCE_KEYS
        assert all(isinstance(v, int | float) and v >= 0 for v in use.values())


@pytest.mark.parametrize("module", ["digits", "iris"])
def test_catalog_entry_names_the_installed_entry_point(module: str) -> None:
    entry = catalog_entry(f"agora.examples.{module}")
    assert entry["agora"]["entry_point"] == module
    (found,) = entry_points(group="deepaas.v2.model", name=module)
    assert found.value == f"agora.examples.{module}"
