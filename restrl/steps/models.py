"""Which policy or model a step runs: the generator spec, and how a model name resolves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.configs import config

log = logging.getLogger("restrl.steps")

TINY_MODEL = "tiny"


@config
class GeneratorSpec:
    """The policy and how to run it."""

    model: str = Field(TINY_MODEL, description="'tiny' (the embedded model), a local path, a "
                       "hub id, or a model artifact URI from a previous run.")
    backend: str = Field("hf", description="Generation backend: hf (transformers), vllm "
                         "(in-process vLLM) or openai (an OpenAI-compatible server).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend options. hf: batch_size, device; vllm: "
        "tensor_parallel_size, gpu_memory_utilization; openai: base_url, max_concurrency.")


def resolve_model(store: ArtifactStore, model: str) -> tuple[str, ArtifactRef | None]:
    """(local path or hub id, artifact ref when the model is a stored artifact)."""
    if model == TINY_MODEL:
        from restrl.toy.tiny_model import tiny_model_path

        return str(tiny_model_path()), None
    if "://" in model:
        model_store = store_for_model(store, model)
        return str(model_store.model_path(model)), model_store.manifest(model).ref()
    return model, None


def model_identity(store: ArtifactStore, model: str) -> dict[str, Any]:
    """What identifies a model in cache keys: its artifact sha256, or its directory's hash."""
    if "://" in model:
        return {"model_sha256": store_for_model(store, model).manifest(model).sha256}
    path = resolve_model(store, model)[0] if model == TINY_MODEL else model
    if Path(path).is_dir():
        from restrl.artifacts.store import directory_sha256

        return {"model_sha256": directory_sha256(Path(path))}
    return {"model": model}


def store_for_model(store: ArtifactStore, model: str) -> ArtifactStore:
    """`store` when the model artifact lives in it, else a store at the model's own root."""
    from restrl.artifacts import store_for

    return store if model.startswith(store.root + "/") else store_for(model)


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as exc:  # an API-only model: plain prompt format
        log.warning("no tokenizer for %s (%s): prompts use the plain format", model_path, exc)
        return None


def open_policy(store: ArtifactStore, spec: GeneratorSpec) -> tuple[Any, Any]:
    """(generator, tokenizer) for `spec`; close the generator when done."""
    from restrl.generation import make_generator as make

    model_path, _ = resolve_model(store, spec.model)
    return make(spec.backend, model_path, **spec.options), load_tokenizer(model_path)
