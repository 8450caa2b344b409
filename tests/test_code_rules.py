"""Rules of the code base that a reviewer would otherwise have to check by eye."""

from __future__ import annotations

import ast
from pathlib import Path

from ist_cli.kernels import conv, mlp, quadratic

ROOT = Path(__file__).resolve().parent.parent
KERNELS = {name for module in (conv, mlp, quadratic) for name, obj in vars(module).items() if hasattr(obj, "py_func")}


def python_files(*folders: str) -> list[Path]:
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]


def test_kernels_are_called_by_keyword_outside_kernels():
    """No numba kernel gets more than 4 positional arguments outside ``ist_cli/kernels``: three
    floats side by side (scale, lr, momentum) must not be swappable unnoticed."""
    assert {"train_steps", "gather_subnet", "sketched_local_steps"} <= KERNELS
    offenders = []
    for path in python_files("ist_cli", "tests", "benchmarks"):
        if (ROOT / "ist_cli" / "kernels") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name in KERNELS and len(node.args) > 4:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert offenders == []


def test_no_method_branches_on_its_own_name():
    """One class per method: no ``self.name ==`` dispatch in ``ist_cli/algorithms``."""
    assert [p for p in python_files("ist_cli/algorithms") if "self.name ==" in p.read_text()] == []
