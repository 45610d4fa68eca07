"""`restrl doctor`: the checks to run on a new (GPU) machine before the first job.

Each check is a small function returning `Check`s; none of them starts a model or a training.
They answer, in order: which versions are installed (and whether they are the ones restrl pins),
whether CUDA works and has bf16, whether a vLLM server answers, whether DeepSpeed's ops can be
built here, and whether the sandbox isolates programs. `docs/gpu.md` says what to do about each
failure.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

# What restrl pins (pyproject.toml); None: any version, only reported.
PINS: dict[str, str | None] = {
    "torch": "2.13.0",
    "transformers": None,
    "trl": "1.16.0",
    "accelerate": None,
    "deepspeed": "0.19.8",
    "vllm": "0.31.0",
    "prefect": "3.8.8",
}


@dataclass(frozen=True)
class Check:
    """One finding: `ok` False is a problem; `required` False means it only matters for some
    jobs (vLLM in the Prefect environment is expected to be absent)."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def installed_version(package: str) -> str | None:
    """The installed version of `package` from its metadata (nothing imported), or None."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def check_versions(pins: dict[str, str | None] = PINS) -> list[Check]:
    """Each package's installed version against its pin (a local tag such as +cpu is ignored)."""
    checks = []
    for package, pin in pins.items():
        found = installed_version(package)
        if found is None:
            # Prefect and vLLM live in different environments (docker/Dockerfile.gpu).
            checks.append(Check(f"version {package}", False, "not installed",
                                required=package not in ("vllm", "prefect", "deepspeed")))
            continue
        ok = pin is None or found.split("+")[0] == pin
        checks.append(Check(f"version {package}", ok,
                            found if ok else f"{found}, restrl pins {pin}"))
    return checks


def check_cuda() -> list[Check]:
    """CUDA visible to torch, the GPUs, and bf16 (the hf backend's and training's dtype)."""
    import torch

    if not torch.cuda.is_available():
        return [Check("cuda", False, f"torch {torch.__version__} sees no GPU "
                      f"(built for CUDA {torch.version.cuda})")]
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    free, total = torch.cuda.mem_get_info(0)
    return [
        Check("cuda", True, f"CUDA {torch.version.cuda}, {len(names)} GPU(s): "
              f"{', '.join(sorted(set(names)))}; GPU 0 {free / 2**30:.0f}/{total / 2**30:.0f} "
              "GiB free"),
        Check("cuda bf16", torch.cuda.is_bf16_supported(), "bf16 supported"
              if torch.cuda.is_bf16_supported() else "no bf16: train with fp16 or fp32"),
    ]


def check_vllm_server(base_url: str | None, timeout: float = 5.0) -> list[Check]:
    """GET {base_url}/models on an OpenAI-compatible server (`vllm serve`); skipped without a
    URL. `base_url` is the API root, e.g. http://host:8000/v1."""
    if not base_url:
        return [Check("vllm server", True, "no URL given (--vllm-url or RESTRL_API_BASE): "
                      "skipped", required=False)]
    import httpx

    url = base_url.rstrip("/") + "/models"
    try:
        reply = httpx.get(url, timeout=timeout)
        reply.raise_for_status()
        models = [m.get("id") for m in reply.json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return [Check("vllm server", False, f"{url}: {type(exc).__name__}: {exc}")]
    return [Check("vllm server", bool(models), f"{url} serves {models or 'no model'}")]


def check_deepspeed() -> list[Check]:
    """DeepSpeed importable, its accelerator, and whether its JIT ops can be built (nvcc)."""
    if installed_version("deepspeed") is None:
        return [Check("deepspeed", False, "not installed (ZeRO-2/3 configs need it)",
                      required=False)]
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    checks = [Check("deepspeed", True, f"accelerator {accelerator.device_name()}, backend "
                    f"{accelerator.communication_backend_name()}")]
    nvcc = shutil.which("nvcc")
    checks.append(Check("deepspeed ops", True, f"nvcc at {nvcc}: fused/offload ops can build"
                        if nvcc else "no nvcc: ZeRO-2/3 with the Trainer's torch AdamW work; "
                        "fused Adam and CPU offload need a -devel CUDA base", required=False))
    return checks


def check_sandbox() -> list[Check]:
    """Whether bubblewrap isolates programs here (dataset domains refuse to run without it)."""
    from restrl.sandbox.isolation import bwrap_works

    ok = bwrap_works()
    return [Check("sandbox", ok, "bubblewrap works: programs run isolated" if ok else
                  "bubblewrap is not usable: only the toy domain runs (rlimits); see "
                  "docker/README.md, 'The sandbox in a container'")]


def run_checks(vllm_url: str | None,
               extra: Sequence[Callable[[], list[Check]]] = ()) -> list[Check]:
    """Every check, in the order docs/gpu.md runs them; one that crashes is reported failed."""
    steps: list[Callable[[], list[Check]]] = [check_versions, check_cuda,
                                              lambda: check_vllm_server(vllm_url),
                                              check_deepspeed, check_sandbox, *extra]
    checks: list[Check] = []
    for step in steps:
        try:
            checks.extend(step())
        except Exception as exc:  # noqa: BLE001 - a broken check is a finding, not a crash
            name = getattr(step, "__name__", "check").removeprefix("check_")
            checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
    return checks


def format_checks(checks: Sequence[Check]) -> str:
    """One line per check: ok / FAIL / warn, its name and what was found."""
    def mark(check: Check) -> str:
        return "ok  " if check.ok else ("FAIL" if check.required else "warn")

    width = max((len(c.name) for c in checks), default=0)
    return "\n".join(f"{mark(c)}  {c.name:<{width}}  {c.detail}" for c in checks)


def failed(checks: Sequence[Check]) -> bool:
    """True when a required check failed (the command's exit status)."""
    return any(not c.ok and c.required for c in checks)
