"""Built-in example modules, written against the DEEPaaS v2 model interface.

Each module is a package whose top level holds the DEEPaaS functions (``get_metadata``,
``warm``, ``get_predict_args``, ``predict``, ``get_train_args``, ``train``, ``schema``) and is
registered under the ``deepaas.v2.model`` entry point group, so the same code runs under
``deepaas-run --model-name digits`` and under Agora's model server. Each also ships its
catalog entry as ``ai4-metadata.yml`` (AI4OS metadata, v2).

- ``digits``: an image classifier on scikit-learn's bundled 8×8 digits;
- ``iris``: a tabular classifier on the iris measurements;
- ``embeddings``: sentence embeddings (all-MiniLM-L6-v2).

They need no network: the data sets ship with scikit-learn, and a module with no trained model
trains a default one the first time it is warmed.
"""

from __future__ import annotations

import os
from pathlib import Path

MODULE_DATA_ENV = "AGORA_MODULE_DATA"


def module_data_dir(module: str) -> Path:
    """Where a module keeps what it trains: ``$AGORA_MODULE_DATA/<module>/`` when the variable
    is set, else ``./agora-module-data/<module>/`` under the working directory. Made on demand.

    Read at call time, not import time: DEEPaaS imports the module before its workers start.
    """
    root = os.environ.get(MODULE_DATA_ENV) or "agora-module-data"
    path = Path(root).expanduser() / module
    path.mkdir(parents=True, exist_ok=True)
    return path
