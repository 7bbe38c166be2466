"""The code's shape, read from the source: which module may import which (the console/trainer
process line, no gradio in the engine, imports flowing ui -> engine), and units small enough to
read (classes under 200 lines, functions under 60)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted([*REPO.glob("engine/**/*.py"), *REPO.glob("ui/*.py"), REPO / "app.py"])
# The trainer's documented command, `python -m engine.train`, is its entry point at the top.
TRAINER_ENTRY = {"engine/train.py"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def layer(module: str) -> str:
    for name in ("engine.console", "engine.trainer", "ui"):
        if module == name or module.startswith(name + "."):
            return name
    return "engine" if module.startswith("engine") else "app"


def test_no_module_imports_across_the_process_line():
    crossings = []
    for path in SOURCES:
        here = layer(module_name(path))
        for imported in imports_of(path):
            there = layer(imported) if imported.startswith(("engine", "ui")) else None
            forbidden = {
                "engine.console": {"engine.trainer", "ui"},
                "engine.trainer": {"engine.console", "ui"},
                "engine": {"engine.console", "ui"}
                | (set() if str(path.relative_to(REPO)) in TRAINER_ENTRY else {"engine.trainer"}),
            }.get(here, set())
            if there in forbidden:
                crossings.append(f"{path.relative_to(REPO)} imports {imported}")
    assert crossings == []


def test_the_walk_sees_the_modules_it_checks():
    names = {module_name(p) for p in SOURCES}
    assert {"engine.console.engine", "engine.trainer.run", "engine.config", "ui.jobs"} <= names
    assert "engine.console.records.store" in imports_of(REPO / "engine/console/engine.py")


def test_the_engine_never_imports_gradio():
    users = [str(p.relative_to(REPO)) for p in SOURCES if layer(module_name(p)) != "ui"
             and p.name != "app.py" and any(i.split(".")[0] == "gradio" for i in imports_of(p))]
    assert users == []


def units(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, node.end_lineno - node.lineno + 1


def test_classes_and_functions_stay_small():
    too_big = []
    for path in SOURCES:
        for node, lines in units(path):
            limit = 200 if isinstance(node, ast.ClassDef) else 60
            if lines >= limit:
                too_big.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert too_big == []


# engine/console's sub-packages, lowest first: a module imports from its own package or one
# earlier in this list, never a later one, so each folder can be read without those above it.
CONSOLE_ORDER = ["records", "metrics", "running", "scheduling", "people", "results", "jobs"]


def console_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["engine", "console"] or len(parts) < 4:
        return None  # engine/console/engine.py, the facade above every package
    return parts[2]


def test_console_packages_import_one_way():
    found = {console_package(module_name(p)) for p in SOURCES} - {None}
    assert found == set(CONSOLE_ORDER)
    backwards = []
    for path in SOURCES:
        here = console_package(module_name(path))
        if here is None:
            continue
        for imported in imports_of(path):
            there = console_package(imported)
            if there is not None and CONSOLE_ORDER.index(there) > CONSOLE_ORDER.index(here):
                backwards.append(f"{path.relative_to(REPO)} ({here}) imports {imported} ({there})")
    assert backwards == []


def test_each_console_package_says_what_it_holds():
    for package in CONSOLE_ORDER:
        init = REPO / "engine/console" / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc.count("\n") == 0 and len(doc) > 20, f"{init}: a one-line docstring"
