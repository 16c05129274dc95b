"""The direction of imports (DESIGN.md): jobs → {hpc, basis}; hpc ⟂ basis; basis and
analysis never import the cluster side."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "basis": {"hpc", "jobs", "analysis", "ray", "submitit", "mlflow"},
    "hpc": {"basis", "jobs", "analysis", "ray", "mlflow"},
    "analysis": {"basis", "hpc", "jobs", "torch", "torchvision", "ray", "submitit", "mlflow"},
}


def imported(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = [f"{f.relative_to(ROOT)} imports {m}" for f in files
           for m in sorted(imported(f) & FORBIDDEN[package])]
    assert not bad, "; ".join(bad)


def test_walker_sees_a_violation(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("import os\nfrom jobs.sweep import run\n")
    assert "jobs" in imported(bad)


def _jobs_graph(root: pathlib.Path) -> dict[str, set[str]]:
    """``jobs`` module → the ``jobs`` modules it imports at run time (at module level
    or inside functions; imports under ``if TYPE_CHECKING:`` are left out)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.glob("*.py")):
        mod = path.stem
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] == "jobs":
                    deps |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names
                         if a.name.startswith("jobs.")}
        graph[mod] = deps - {mod, "__init__"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_jobs_has_no_import_cycle():
    graph = _jobs_graph(ROOT / "jobs")
    assert {"config", "specs", "dag", "trial"} <= set(graph)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle in jobs/: " + " → ".join(cycle or [])


def test_cycle_finder_sees_a_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from jobs.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from jobs import a\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\n"
                                   "if TYPE_CHECKING:\n    from jobs.a import y\n")
    graph = _jobs_graph(tmp_path)
    assert graph["c"] == set()
    assert _cycle(graph) == ["a", "b", "a"]
