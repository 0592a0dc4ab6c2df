"""Public docstrings name the errors their code raises (the project standard: a ``Raises:`` section naming the class).

Read from the source with ``ast``: every public function, class and method of the data package, the layers, the
counters and the method strategies that contains a ``raise SomeError(...)`` has a ``Raises:`` section in its own
docstring (or, for a method, its class's) that names ``SomeError``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "adaptkit"
FILES = sorted(
    [*PACKAGE.glob("data/*.py"), *PACKAGE.glob("layers/*.py"), PACKAGE / "counting.py",
     *(PACKAGE / "strategies" / f"{name}.py" for name in ("aim", "st_adapter", "zero_i2v", "timesformer", "baselines"))]
)
CALLED_FOR_USERS = ("__init__", "__post_init__", "__call__", "__getitem__")


def _raised_names(node: ast.AST) -> set[str]:
    """Names of the exception classes ``node`` raises itself (``raise Name(...)``, ``raise error(...)`` partials
    excluded: they name no class)."""
    names = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Raise) and isinstance(child.exc, ast.Call) and isinstance(child.exc.func, ast.Name):
            name = child.exc.func.id
            if name[0].isupper():
                names.add(name)
    return names


def _raises_section(doc: str | None) -> str:
    doc = doc or ""
    return doc[doc.index("Raises:"):] if "Raises:" in doc else ""


def _undocumented(path: Path) -> list[str]:
    missing = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            section = _raises_section(ast.get_docstring(node))
            missing += [f"{node.name}: {name}" for name in sorted(_raised_names(node)) if name not in section]
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            class_section = _raises_section(ast.get_docstring(node))
            for method in node.body:
                if not isinstance(method, ast.FunctionDef):
                    continue
                if method.name.startswith("_") and method.name not in CALLED_FOR_USERS:
                    continue
                section = _raises_section(ast.get_docstring(method)) + class_section
                missing += [f"{node.name}.{method.name}: {name}" for name in sorted(_raised_names(method))
                            if name not in section]
    return missing


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_public_docstrings_name_the_errors_their_code_raises(path: Path) -> None:
    assert _undocumented(path) == []


def test_the_check_finds_an_undocumented_raise(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text('def f(x):\n    """No section."""\n    raise ValueError(x)\n\n\n'
                      'class C:\n    """Raises:\n        KeyError: never."""\n\n'
                      '    def g(self):\n        raise TypeError("no")\n', encoding="utf-8")
    assert _undocumented(source) == ["f: ValueError", "C.g: TypeError"]
