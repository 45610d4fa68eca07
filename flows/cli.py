"""The `restrl` command: the library's commands (`restrl.cli`) plus running flows here.

`restrl run X` and `restrl demo` sit in the flow layer (flows -> tasks -> restrl), so the
library never imports a flow. Heavy imports live inside the commands: `--help` stays instant.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from restrl.cli import UsageError, _fail, apply_overrides
from restrl.cli import app as library_app
from restrl.cli import main as library_main

app = library_app
run_app = typer.Typer(
    help="Run a pipeline flow here (Prefect's ephemeral API unless PREFECT_API_URL is set).",
    no_args_is_help=True)
app.add_typer(run_app, name="run")

FLOWS = {
    "self-training": ("restrl_flows.self_training", "self_training"),
    "value-model": ("restrl_flows.value_model", "value_model"),
    "evaluate": ("restrl_flows.evaluate", "evaluate"),
    "pipeline": ("restrl_flows.pipeline", "pipeline"),
    "retrain": ("restrl_flows.retrain", "retrain"),
}
SET_HELP = ("Override one parameter, dotted: --set stage1.sampling.n=8 --set "
            "stage1.problems.0.n=64 (a number picks a list element; values are JSON when they "
            "parse as JSON). Repeatable; `restrl run X --help` lists every parameter.")
PRESET_HELP = ("Starting parameters, before --params-file and --set: 'reference' (the original "
               "ReST-RL defaults) or 'toy' (the small CPU budgets of `restrl demo`).")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` merged into `base` (nested dicts merged, other values replaced); returns base."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def run_flow(name: str, overrides: list[str], params_file: Path | None,
             preset: str = "reference") -> dict[str, Any]:
    """Build the flow's typed parameters from a preset, a JSON file and --set items (in that
    order, later ones win); run the flow."""
    from pydantic import ValidationError

    from restrl_flows.params import FLOW_PARAMS
    from restrl_flows.params import preset as preset_params

    params_model = FLOW_PARAMS[name]
    try:
        values = preset_params(params_model, preset).model_dump(mode="json")
        if params_file is not None:
            deep_merge(values, json.loads(params_file.read_text()))
        apply_overrides(values, overrides)
        params = params_model.model_validate(values)
    except (ValueError, ValidationError) as exc:
        raise UsageError(str(exc)) from None
    module_name, flow_name = FLOWS[name]
    return getattr(importlib.import_module(module_name), flow_name)(params)


def flow_help(name: str, doc: str) -> str:
    """The command's help: what it runs, then every parameter with its default and help."""
    from restrl.configs import field_docs
    from restrl_flows.params import FLOW_PARAMS

    lines = [doc, "", "Parameters (--set PATH=VALUE; defaults are the reference preset's):", ""]
    for field in field_docs(FLOW_PARAMS[name]):
        default = f" [default: {field.default}]" if field.default else ""
        lines.append(f"{field.path} ({field.type}){default}: {field.help}")
        lines.append("")
    return "\n".join(lines)


class _LazyHelpCommand(typer.core.TyperCommand):
    """A command whose help text is built when asked for, so that `restrl --help` and the
    other commands do not import what it needs to describe itself."""

    help_source: Any = None

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if self.help_source is not None:
            self.help = self.help_source()
        super().format_help(ctx, formatter)


def _flow_command(name: str, doc: str) -> None:
    def command(
        set_: Annotated[list[str], typer.Option("--set", help=SET_HELP)] = [],  # noqa: B006
        params_file: Annotated[Path | None, typer.Option(help="JSON file of parameters.")] = None,
        preset: Annotated[str, typer.Option(help=PRESET_HELP)] = "reference",
    ) -> None:
        try:
            result = run_flow(name, set_, params_file, preset)
        except UsageError as exc:
            _fail(str(exc))
        typer.echo(json.dumps(result, indent=2, default=str))

    command.__doc__ = doc
    help_class = type(f"{name}-command", (_LazyHelpCommand,),
                      {"help_source": staticmethod(lambda: flow_help(name, doc))})
    run_app.command(name, cls=help_class)(command)


_flow_command("self-training", "Stage 1: sample -> verify -> ReST data -> GRPO (toy domain by "
              "default).")
_flow_command("value-model", "Stage 2: MCTS value targets -> reward data -> value model.")
_flow_command("evaluate", "Evaluate policies: sampling pass@k, best-of-N, VM-MCTS.")
_flow_command("pipeline", "Everything: Stage 1 -> Stage 2 -> base vs trained evaluation.")
_flow_command("retrain", "Retraining: the pipeline from the champion policy; promotion only on "
              "improvement.")


def quiet_console() -> None:
    """One line per step on the console and nothing below a warning besides: Prefect's console
    handler, MLflow and transformers are turned down (the Prefect UI and MLflow still record
    every log line). Set before Prefect and MLflow load their logging settings."""
    for name, value in (("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING"),
                        ("MLFLOW_LOGGING_LEVEL", "WARNING"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(name, value)
    if not os.path.exists("/dev/nvidiactl"):  # else DeepSpeed warns that it found no GPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
    progress = logging.getLogger("restrl_flows.progress")
    progress.setLevel(logging.INFO)
    progress.addHandler(handler)
    progress.propagate = False


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
    from restrl.toy.tiny_model import tiny_model_path

    quiet_console()
    start = time.perf_counter()
    typer.echo("restrl demo: the ReST-RL pipeline on the toy domain, tiny model, CPU only")
    typer.echo(f"tiny model: {tiny_model_path()}")
    try:
        result = run_flow("pipeline", set_, None, preset="toy")
    except UsageError as exc:
        _fail(str(exc))
    minutes = (time.perf_counter() - start) / 60
    rows = result["summary"]
    from restrl_flows.pipeline import summary_text  # after quiet_console: it imports Prefect

    typer.echo("\n" + summary_text(rows))
    auc, within = result.get("value_model_auc"), result.get("value_model_within_problem_auc")
    if auc is not None:
        within_text = "-" if within is None else f"{within:.3f}"
        typer.echo(f"value model AUC on the trained policy's held-out completions: {auc:.3f}; "
                   f"within a problem: {within_text}")
    summary = {"rows": rows, "value_model_auc": auc, "value_model_within_problem_auc": within,
               "policy": result["policy"],
               "value_model": result["value_model"], "mlflow_run_id": result["mlflow_run_id"],
               "minutes": round(minutes, 2)}
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    typer.echo(f"\nfinished in {minutes:.1f} min; summary written to {summary_path}")
    typer.echo("where to look next:")
    typer.echo("  mlflow ui --backend-store-uri sqlite:///.restrl/mlflow.db"
               "   # runs, metrics, plots")
    typer.echo(f"  restrl lineage {result['policy']}   # where the trained policy came from")
    typer.echo("  prefect server start   # then open http://127.0.0.1:4200 for flow runs")


def main() -> None:
    library_main()


if __name__ == "__main__":
    main()
