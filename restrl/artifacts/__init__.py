"""Artifacts: Parquet tables and model directories over fsspec, with manifests and lineage."""

from restrl.artifacts.lineage import format_lineage
from restrl.artifacts.store import (
    ArtifactCorrupted,
    ArtifactError,
    ArtifactRef,
    ArtifactStore,
    Manifest,
    artifact_key,
    code_version,
    store_for,
)

__all__ = [
    "ArtifactCorrupted",
    "ArtifactError",
    "ArtifactRef",
    "ArtifactStore",
    "Manifest",
    "artifact_key",
    "code_version",
    "format_lineage",
    "store_for",
]
