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
