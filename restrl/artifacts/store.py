"""ArtifactStore: Parquet tables and model directories over fsspec, with manifests and lineage.

Layout under the root (`file:///...` by default, `s3://bucket/prefix` through s3fs):

    <kind>/<key>/data.parquet        a table          (or <kind>/<key>/model/... for a model)
    <kind>/<key>/manifest.json       written last: an artifact exists iff its manifest does
    <kind>/<key>/shards/NNNNN.parquet   committed pieces of a long stage, for resuming

`key` is derived from what produced the artifact (kind, parameters, parents' sha256, code
version), so a re-run with unchanged inputs finds it and skips the work. Every file is written
whole or not at all: a rename on a local disk, a single PUT on S3. Readers check the sha256
recorded in the manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
TABLE_FILE = "data.parquet"
MODEL_DIR = "model"
DEFAULT_ROOT = ".restrl/artifacts"


class ArtifactError(Exception):
    """An artifact is missing or cannot be used."""


class ArtifactCorrupted(ArtifactError):
    """An artifact's content does not match the sha256 in its manifest."""


@dataclass(frozen=True)
class ArtifactRef:
    """A small, serializable pointer to a committed artifact (what Prefect tasks pass around)."""

    uri: str
    sha256: str
    kind: str
    rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    """What an artifact is and where it came from."""

    kind: str
    uri: str
    sha256: str
    rows: int | None
    schema: str | None
    params: dict[str, Any]
    parents: list[dict[str, Any]]
    code_version: str
    created_at: str
    prefect_flow_run_id: str | None = None
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ref(self) -> ArtifactRef:
        return ArtifactRef(self.uri, self.sha256, self.kind, self.rows)


@cache
def code_version() -> str:
    """Package version plus the git commit when restrl runs from a checkout."""
    from restrl import __version__

    commit = ""
    head = Path(__file__).resolve().parents[2] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_path = head.parent / ref[5:]
            if ref_path.exists():
                commit = ref_path.read_text().strip()
            else:  # packed refs
                for line in (head.parent / "packed-refs").read_text().splitlines():
                    if line.endswith(" " + ref[5:]):
                        commit = line.split()[0]
        else:
            commit = ref
    except OSError:
        pass
    return f"{__version__}+{commit[:12]}" if commit else __version__


def canonical_json(value: Any) -> str:
    """JSON with sorted keys: equal parameters hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def artifact_key(kind: str, params: Mapping[str, Any], parents: Sequence[ArtifactRef],
                 version: str | None = None) -> str:
    """Content-derived location: a hash of what produced the artifact."""
    payload = canonical_json({
        "kind": kind,
        "params": params,
        "parents": sorted(p.sha256 for p in parents),
        "code": version if version is not None else code_version(),
    })
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _storage_options(root: str) -> dict[str, Any]:
    if not root.startswith("s3://"):
        return {}
    endpoint = os.environ.get("RESTRL_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def default_root() -> str:
    return os.environ.get("RESTRL_ARTIFACTS", DEFAULT_ROOT)


class ArtifactStore:
    """Tables and models under one root URL; `file://` and `s3://` run the same lines."""

    def __init__(self, root: str | None = None, **storage_options: Any):
        import fsspec

        root = root or default_root()
        if "://" not in root:
            root = "file://" + str(Path(root).expanduser().resolve())
        self.root = root.rstrip("/")
        options = {**_storage_options(self.root), **storage_options}
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **options)
        self.protocol = "file" if self.root.startswith("file://") else self.root.split("://")[0]

    # ------------------------------------------------------------------ paths and urls

    def _path(self, *parts: str) -> str:
        return "/".join([self._root_path.rstrip("/"), *parts])

    def _url(self, path: str) -> str:
        if self.protocol == "file":
            return "file://" + path
        return f"{self.protocol}://{path}"

    def _path_of(self, uri: str) -> str:
        if not uri.startswith(self.root + "/"):
            raise ArtifactError(f"{uri} is not under this store's root {self.root}")
        return self._path(uri[len(self.root) + 1:])

    def uri(self, kind: str, key: str) -> str:
        return f"{self.root}/{kind}/{key}"

    # ------------------------------------------------------------------ atomic writes

    def _write_bytes(self, path: str, data: bytes) -> None:
        """Whole or nothing: rename on a local disk, one PUT on an object store."""
        if self.protocol == "file":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            partial = f"{path}.partial-{uuid.uuid4().hex}"
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        else:
            self.fs.pipe_file(path, data)

    def _read_bytes(self, path: str) -> bytes:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise ArtifactError(f"missing artifact file: {self._url(path)}") from None

    # ------------------------------------------------------------------ manifests

    def find(self, kind: str, key: str) -> ArtifactRef | None:
        """The committed artifact at this key, or None (a half-written one does not count)."""
        path = self._path(kind, key, MANIFEST)
        if not self.fs.exists(path):
            return None
        return self.manifest(self.uri(kind, key)).ref()

    def manifest(self, uri: str) -> Manifest:
        data = self._read_bytes(self._path_of(uri.rstrip("/")) + "/" + MANIFEST)
        return Manifest(**json.loads(data))

    def _commit(self, kind: str, key: str, sha256: str, rows: int | None, schema: str | None,
                params: Mapping[str, Any], parents: Sequence[ArtifactRef],
                run_ids: Mapping[str, str | None] | None, extra: Mapping[str, Any] | None
                ) -> ArtifactRef:
        run_ids = run_ids or {}
        manifest = Manifest(
            kind=kind, uri=self.uri(kind, key), sha256=sha256, rows=rows, schema=schema,
            params=json.loads(canonical_json(dict(params))),
            parents=[p.to_dict() for p in parents], code_version=code_version(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            prefect_flow_run_id=run_ids.get("prefect_flow_run_id"),
            mlflow_run_id=run_ids.get("mlflow_run_id"), extra=dict(extra or {}),
        )
        data = json.dumps(asdict(manifest), indent=2, sort_keys=True).encode()
        self._write_bytes(self._path(kind, key, MANIFEST), data)
        return manifest.ref()

    # ------------------------------------------------------------------ tables

    def put_table(self, table: Any, kind: str, params: Mapping[str, Any],
                  parents: Sequence[ArtifactRef] = (), *, key: str | None = None,
                  run_ids: Mapping[str, str | None] | None = None,
                  extra: Mapping[str, Any] | None = None) -> ArtifactRef:
        """Commit a pyarrow table as `kind`; returns its reference."""
        data = table_bytes(table)
        key = key or artifact_key(kind, params, parents)
        self._write_bytes(self._path(kind, key, TABLE_FILE), data)
        return self._commit(kind, key, hashlib.sha256(data).hexdigest(), table.num_rows,
                            table.schema.to_string(show_schema_metadata=False), params, parents,
                            run_ids, extra)

    def read_table(self, ref: ArtifactRef | str) -> Any:
        """The table behind a reference, after checking its sha256 against the manifest."""
        import pyarrow.parquet as pq

        uri = ref.uri if isinstance(ref, ArtifactRef) else ref
        manifest = self.manifest(uri)
        data = self._read_bytes(self._path_of(uri) + "/" + TABLE_FILE)
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.sha256:
            raise ArtifactCorrupted(
                f"{uri}/{TABLE_FILE} is corrupted: sha256 {digest[:16]}... but the manifest "
                f"records {manifest.sha256[:16]}...; delete the artifact directory to rebuild it")
        return pq.read_table(io.BytesIO(data))

    # ------------------------------------------------------------------ models

    def put_model(self, local_dir: str | Path, kind: str, params: Mapping[str, Any],
                  parents: Sequence[ArtifactRef] = (), *, key: str | None = None,
                  run_ids: Mapping[str, str | None] | None = None,
                  extra: Mapping[str, Any] | None = None) -> ArtifactRef:
        """Commit a `save_pretrained` directory; its sha256 covers every file's name and bytes."""
        local_dir = Path(local_dir)
        key = key or artifact_key(kind, params, parents)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        for file in files:
            self._write_bytes(self._path(kind, key, MODEL_DIR, file.relative_to(local_dir)
                                         .as_posix()), file.read_bytes())
        return self._commit(kind, key, directory_sha256(local_dir), None, None, params, parents,
                            run_ids, extra)

    def model_path(self, ref: ArtifactRef | str, cache_dir: str | Path | None = None) -> Path:
        """A local directory holding the model (downloaded once for remote stores), verified."""
        uri = ref.uri if isinstance(ref, ArtifactRef) else ref
        manifest = self.manifest(uri)
        remote = self._path_of(uri) + "/" + MODEL_DIR
        if self.protocol == "file":
            local = Path(remote)
        else:
            base = Path(cache_dir or Path.home() / ".cache" / "restrl" / "models")
            local = base / manifest.sha256[:24]
            if not (local / ".complete").exists():
                staging = base / f".{manifest.sha256[:24]}.{uuid.uuid4().hex}"
                self.fs.get(remote + "/", str(staging), recursive=True)
                (staging / ".complete").write_text(manifest.sha256)
                if local.exists():
                    import shutil

                    shutil.rmtree(staging)
                else:
                    staging.rename(local)
        digest = directory_sha256(local)
        if digest != manifest.sha256:
            raise ArtifactCorrupted(f"{uri}: model files do not match the manifest's sha256")
        return local

    # ------------------------------------------------------------------ shards

    def shard_path(self, kind: str, key: str, index: int) -> str:
        return self._path(kind, key, "shards", f"{index:05d}.parquet")

    def put_shard(self, table: Any, kind: str, key: str, index: int) -> None:
        self._write_bytes(self.shard_path(kind, key, index), table_bytes(table))

    def committed_shards(self, kind: str, key: str) -> list[int]:
        """Indices of the shards already committed for this artifact (to resume after a crash)."""
        directory = self._path(kind, key, "shards")
        if not self.fs.exists(directory):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(directory, detail=False)]
        return sorted(int(n[:5]) for n in names if n.endswith(".parquet") and n[:5].isdigit()
                      and ".partial" not in n)

    def read_shard(self, kind: str, key: str, index: int) -> Any:
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(self._read_bytes(self.shard_path(kind, key, index))))

    # ------------------------------------------------------------------ lineage

    def lineage(self, uri: str) -> dict[str, Any]:
        """The artifact's manifest with its parents' lineage nested under `parents`."""
        manifest = asdict(self.manifest(uri))
        manifest["parents"] = [self.lineage(p["uri"]) if self._owns(p["uri"]) else p
                               for p in manifest["parents"]]
        return manifest

    def _owns(self, uri: str) -> bool:
        return uri.startswith(self.root + "/")


def table_bytes(table: Any) -> bytes:
    """A table as Parquet bytes (deterministic for the same table and pyarrow version)."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def directory_sha256(directory: Path) -> str:
    """sha256 over (relative path, file sha256) of every file, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        if file.name == ".complete":
            continue
        digest.update(file.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def store_for(uri: str) -> ArtifactStore:
    """A store able to read `uri`: its root is the part before `/<kind>/<key>`."""
    root = uri.rstrip("/").rsplit("/", 2)[0]
    return ArtifactStore(root)
