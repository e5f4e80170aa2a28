"""The rooms of python/pgsl keep to themselves: evaluation sits beside training on top of the run
object, and pgsl_ext never imports the trainer."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PGSL = ROOT / "python" / "pgsl"


def _imports(path: pathlib.Path, package: str):
    """Absolute module names imported by ``path`` (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def test_no_evaluation_module_imports_training():
    for path in sorted((PGSL / "evaluate").glob("*.py")):
        imported = _imports(path, "pgsl.evaluate")
        assert not any(n == "pgsl.train" or n.startswith("pgsl.train.") for n in imported), f"{path.name} imports pgsl.train"


def test_pgsl_ext_never_imports_the_trainer():
    for path in sorted((ROOT / "pgsl_ext").glob("*.py")):
        imported = _imports(path, "pgsl_ext")
        assert not any(n == "pgsl" or n.startswith("pgsl.") for n in imported), f"{path.name} imports pgsl"


def test_the_trainer_uses_only_pgsl_ext_public_modules():
    public = {"pgsl_ext", "pgsl_ext.ops", "pgsl_ext.attacks", "pgsl_ext.reference"}
    for path in sorted(PGSL.rglob("*.py")):
        package = "pgsl.evaluate" if path.parent.name == "evaluate" else "pgsl"
        for name in _imports(path, package):
            if name.startswith("pgsl_ext"):
                module = name if name in public else name.rsplit(".", 1)[0]
                assert module in public, f"{path.relative_to(ROOT)} imports {name}"
