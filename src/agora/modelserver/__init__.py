"""Agora's model server: any package written for the DEEPaaS v2 model interface, served
unchanged with the DEEPaaS v2 REST API (``python -m agora.modelserver`` or
``agora serve-model``), plus Agora's own typed interface (:mod:`agora.modelserver.typed`)."""

from agora.modelserver.files import UploadedFile
from agora.modelserver.typed import File, TypedModel

__all__ = ["File", "TypedModel", "UploadedFile"]
