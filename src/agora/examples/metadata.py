"""What an example module says about itself: its ``ai4-metadata.yml`` and DEEPaaS's metadata."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

import agora

CATALOG_FILE = "ai4-metadata.yml"


def catalog_entry(package: str) -> dict[str, Any]:
    """The package's ``ai4-metadata.yml`` (AI4OS metadata v2), parsed."""
    text = resources.files(package).joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    entry: dict[str, Any] = yaml.safe_load(text)
    return entry


def deepaas_metadata(name: str, package: str) -> dict[str, Any]:
    """``get_metadata()``'s answer: DEEPaaS's usual keys, taken from the catalog entry."""
    entry = catalog_entry(package)
    return {
        "id": name,
        "name": name,
        "title": entry["title"],
        "summary": entry["summary"],
        "description": entry["description"],
        "author": "Agora",
        "version": agora.__version__,
        "url": entry["links"]["source_code"],
        "license": "Apache-2.0",
        "tags": entry.get("tags", []),
    }
