"""Render an artifact's ancestry (from `ArtifactStore.lineage`) as an indented tree."""

from __future__ import annotations

from typing import Any


def format_lineage(node: dict[str, Any], indent: str = "") -> str:
    """One block per artifact: kind, uri, sha256, rows, parameters, runs; parents indented."""
    lines = [f"{indent}{node.get('kind', '?')}  {node.get('uri', '?')}"]
    pad = indent + "    "
    lines.append(f"{pad}sha256 {str(node.get('sha256', ''))[:16]}..."
                 + (f"  rows {node['rows']}" if node.get("rows") is not None else ""))
    if node.get("params"):
        params = ", ".join(f"{k}={v}" for k, v in sorted(node["params"].items()))
        lines.append(f"{pad}params {params}")
    runs = []
    if node.get("mlflow_run_id"):
        runs.append(f"mlflow run {node['mlflow_run_id']}")
    if node.get("prefect_flow_run_id"):
        runs.append(f"prefect flow run {node['prefect_flow_run_id']}")
    if node.get("code_version"):
        runs.append(f"code {node['code_version']}")
    if runs:
        lines.append(pad + "  ".join(runs))
    for parent in node.get("parents", []):
        lines.append(format_lineage(parent, indent + "  <- "))
    return "\n".join(lines)
