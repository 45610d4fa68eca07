"""An artifact's ancestry (from `ArtifactStore.lineage`) as a graph, each artifact once.

A pipeline's outputs share ancestors (one problems artifact feeds sampling, verification, ReST
data and training), so the nested tree repeats them. `lineage_graph` flattens it to a DAG;
`format_lineage` prints it as a tree whose repeated artifacts are back-references, and
`lineage_dot` / `lineage_mermaid` render it for Graphviz and Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMATS = ("tree", "json", "dot", "mermaid")


@dataclass
class LineageGraph:
    """Artifacts by uri (manifests without `parents`), and edges (child uri, parent uri) in the
    order the manifests list them; `root` is the artifact asked about."""

    root: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def parents(self, uri: str) -> list[str]:
        return [parent for child, parent in self.edges if child == uri]

    def as_json(self) -> dict[str, Any]:
        return {"root": self.root, "nodes": list(self.nodes.values()),
                "edges": [{"child": c, "parent": p} for c, p in self.edges]}


def lineage_graph(tree: dict[str, Any]) -> LineageGraph:
    """The DAG of a nested lineage tree: each artifact once, each edge once."""
    graph = LineageGraph(root=str(tree.get("uri", "?")))
    seen_edges: set[tuple[str, str]] = set()

    def visit(node: dict[str, Any]) -> str:
        uri = str(node.get("uri", "?"))
        if uri not in graph.nodes:
            graph.nodes[uri] = {k: v for k, v in node.items() if k != "parents"}
            for parent in node.get("parents", []):
                edge = (uri, visit(parent))
                if edge not in seen_edges:
                    seen_edges.add(edge)
                    graph.edges.append(edge)
        return uri

    visit(tree)
    return graph


def _short(uri: str) -> str:
    """`kind/key` of an artifact uri (its last two path parts)."""
    return "/".join(uri.rstrip("/").split("/")[-2:])


def _details(node: dict[str, Any]) -> list[str]:
    lines = [f"sha256 {str(node.get('sha256', ''))[:16]}..."
             + (f"  rows {node['rows']}" if node.get("rows") is not None else "")]
    if node.get("params"):
        lines.append("params " + ", ".join(f"{k}={v}" for k, v in sorted(node["params"].items())))
    runs = []
    if node.get("mlflow_run_id"):
        runs.append(f"mlflow run {node['mlflow_run_id']}")
    if node.get("prefect_flow_run_id"):
        runs.append(f"prefect flow run {node['prefect_flow_run_id']}")
    if node.get("code_version"):
        runs.append(f"code {node['code_version']}")
    if runs:
        lines.append("  ".join(runs))
    return lines


def format_lineage(tree: dict[str, Any]) -> str:
    """The ancestry as an indented tree: each artifact's kind, uri, sha256, rows, parameters and
    runs the first time it appears; later appearances are one line `(see above)`."""
    graph = lineage_graph(tree)
    lines: list[str] = []
    shown: set[str] = set()

    def show(uri: str, prefix: str, child_prefix: str) -> None:
        node = graph.nodes[uri]
        head = f"{prefix}{node.get('kind', '?')}  {uri}"
        if uri in shown:
            lines.append(head + "  (see above)")
            return
        shown.add(uri)
        lines.append(head)
        parents = graph.parents(uri)
        bar = "│   " if parents else "    "
        lines.extend(child_prefix + bar + text for text in _details(node))
        for i, parent in enumerate(parents):
            last = i == len(parents) - 1
            show(parent, child_prefix + ("└── " if last else "├── "),
                 child_prefix + ("    " if last else "│   "))

    show(graph.root, "", "")
    return "\n".join(lines)


def lineage_dot(tree: dict[str, Any]) -> str:
    """Graphviz DOT: one box per artifact (kind and kind/key), an arrow from parent to child."""
    graph = lineage_graph(tree)
    ids = {uri: f"a{i}" for i, uri in enumerate(graph.nodes)}
    lines = ["digraph lineage {", "  rankdir=BT;", "  node [shape=box, fontname=monospace];"]
    for uri, node in graph.nodes.items():
        label = f"{node.get('kind', '?')}\\n{_short(uri)}"
        lines.append(f'  {ids[uri]} [label="{label}", tooltip="{uri}"];')
    lines += [f"  {ids[parent]} -> {ids[child]};" for child, parent in graph.edges]
    lines.append("}")
    return "\n".join(lines)


def lineage_mermaid(tree: dict[str, Any]) -> str:
    """A Mermaid flowchart (renders in GitHub, MLflow and Prefect markdown): parent --> child."""
    graph = lineage_graph(tree)
    ids = {uri: f"a{i}" for i, uri in enumerate(graph.nodes)}
    lines = ["flowchart BT"]
    for uri, node in graph.nodes.items():
        lines.append(f'  {ids[uri]}["{node.get("kind", "?")}<br/>{_short(uri)}"]')
    lines += [f"  {ids[parent]} --> {ids[child]}" for child, parent in graph.edges]
    return "\n".join(lines)


def render_lineage(tree: dict[str, Any], fmt: str) -> str:
    """The lineage in one of `FORMATS` ("json" is the DAG's nodes and edges)."""
    import json

    if fmt == "tree":
        return format_lineage(tree)
    if fmt == "json":
        return json.dumps(lineage_graph(tree).as_json(), indent=2)
    if fmt == "dot":
        return lineage_dot(tree)
    if fmt == "mermaid":
        return lineage_mermaid(tree)
    raise ValueError(f"unknown lineage format {fmt!r}; expected one of {FORMATS}")
