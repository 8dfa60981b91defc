"""Metadata documents shaped like those of real AI4OS / DEEP modules, and a helper to lay out a
catalog directory of them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

#: ai4-metadata.yml (v2) as AI4OS modules carry it (after DEEP-OC-mods, ai4os-demo-app).
V2_YAML = """\
metadata_version: 2.0.0
title: DEEP OC Massive Online Data Streams
summary: Massive Online Data Streams analysis
description: |-
  This use case analyzes online data streams in order to generate alerts with time-bounded
  constrains and in real-time.

  Current modelling approach using DL techniques: LSTM (vanilla, stacked, bidirectional),
  GRU, CNN, and MLP.

  **References**

  [1]: Bhattacharyya, D.K. and Kalita, J.K., 2013. *Network anomaly detection*.
dates:
  created: '2019-02-19'
  updated: '2024-02-19'
links:
  source_code: https://github.com/deephdc/DEEP-OC-mods
  docker_image: deephdc/deep-oc-mods
  dataset: https://github.com/deephdc/mods/tree/master/data
  zenodo_doi: https://doi.org/10.5281/zenodo.1234567
  citation: https://github.com/deephdc/mods/blob/master/CITATION.cff
tags:
  - security
  - networks
  - time-series prediction
tasks:
  - Anomaly Detection
  - Time Series
categories:
  - AI4 trainable
libraries:
  - TensorFlow
  - Keras
data-type:
  - Tabular
resources:
  inference:
    cpu: 1
    memory_MB: 2000
  training:
    cpu: 4
    gpu: 1
    memory_MB: 8000
    gpu_memory_MB: 8000
"""

#: metadata.json (v1) as DEEP modules carry it (after DEEP-OC-image-classification-tf).
V1 = {
    "title": "Image classification",
    "summary": "Train your own image classifier with your custom dataset.",
    "description": [
        "The deep learning revolution has brought significant advances in a number of fields.",
        "",
        "This module comes pre-trained on the 1K Imagenet classes.",
    ],
    "keywords": ["tensorflow", "docker", "deep learning", "trainable", "image classification"],
    "license": "MIT",
    "date_creation": "2019-01-01",
    "training_files_url": "https://api.cloud.ifca.es:8080/swift/v1/imagenet-tf/",
    "dataset_url": "http://www.image-net.org/challenges/LSVRC/2012/",
    "cite_url": "https://doi.org/10.1016/j.compag.2020.105445",
    "sources": {
        "dockerfile_repo": "https://github.com/deephdc/DEEP-OC-image-classification-tf",
        "docker_registry_repo": "deephdc/deep-oc-image-classification-tf",
        "code": "https://github.com/deephdc/image-classification-tf",
    },
    "continuous_integration": {
        "build_status_badge": "https://jenkins.indigo-datacloud.eu/buildStatus/icon?job=x",
        "build_status_url": "https://jenkins.indigo-datacloud.eu/job/x",
    },
    "tosca": [
        {
            "title": "Mesos (CPU)",
            "url": "https://raw.githubusercontent.com/indigo-dc/tosca-templates/master/x.yml",
            "inputs": ["rclone_conf", "rclone_url"],
        }
    ],
}


def v2(**changes: Any) -> dict[str, Any]:
    """The v2 document with top-level fields replaced (None removes one)."""
    doc: dict[str, Any] = yaml.safe_load(V2_YAML)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def v1(**changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(V1))
    doc.update(changes)
    return doc


def write_module(root: Path, name: str, doc: dict[str, Any] | str, file: str = "") -> Path:
    """A module directory ``root/name`` with its metadata file (YAML for v2, JSON for v1)."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(doc, str):
        path = directory / (file or "ai4-metadata.yml")
        path.write_text(doc, encoding="utf-8")
        return path
    if not file:
        file = "ai4-metadata.yml" if "metadata_version" in doc else "metadata.json"
    path = directory / file
    if file.endswith(".json"):
        path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def run_git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` as a test author; its output."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()
