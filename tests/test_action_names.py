"""One name per action, from the button to the API endpoint to the engine method: a person who
reads "Export model" finds /export_model and Artifacts.export_model. Endpoint names are the
contract with scripts, so the button and the method follow the endpoint."""

import ast
import dataclasses
from pathlib import Path

from ui.jobs import JobView

REPO = Path(__file__).resolve().parent.parent
# An endpoint names its object when the engine's collaborator does not: /pause_job is
# engine.jobs.pause, /list_sweeps is engine.sweeps.list.
OBJECT_SUFFIXES = ("_job", "_sweep", "_sweeps")


def action_of(endpoint: str) -> str:
    for suffix in OBJECT_SUFFIXES:
        if endpoint.endswith(suffix):
            return endpoint.removesuffix(suffix)
    return endpoint


def engine_method_called(function: ast.FunctionDef) -> str | None:
    """The engine method an endpoint calls: `engine.jobs.pause(...)`, `artifacts.export_gguf(...)`
    or `engine.health()`."""
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            chain, target = [node.func.attr], node.func.value
            while isinstance(target, ast.Attribute):
                chain.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name) and target.id in ("engine", "artifacts") \
                    and chain[-1] not in ("users",):
                return chain[0]
    return None


def endpoints() -> dict[str, str | None]:
    """Each endpoint function of ui/api.py, with the engine method it calls."""
    tree = ast.parse((REPO / "ui/api.py").read_text())
    found = {}
    for outer in tree.body:
        if isinstance(outer, ast.FunctionDef) and outer.name.endswith("_endpoints"):
            for inner in outer.body:
                if isinstance(inner, ast.FunctionDef):
                    found[inner.name] = engine_method_called(inner)
    return found


def buttons() -> set[str]:
    """The job view's buttons, and every other button named `<action>-button`."""
    names = {f.name for f in dataclasses.fields(JobView) if f.type == "gr.Button"}
    for path in REPO.glob("ui/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "elem_id" and \
                    isinstance(node.value, ast.Constant) and str(node.value.value).endswith(
                        "-button"):
                names.add(node.value.value.removesuffix("-button").replace("-", "_"))
    return names


def test_each_endpoint_calls_the_engine_method_of_its_own_name():
    found = endpoints()
    assert {"export_model", "try_model", "pause_job", "list_sweeps", "upload_dataset"} <= set(found)
    mismatched = {name: method for name, method in found.items()
                  if method not in (name, action_of(name))}
    assert mismatched == {}


def test_each_button_is_named_after_its_endpoint():
    names, found = buttons(), endpoints()
    assert {"export_model", "try_model", "pause", "set_priority"} <= names
    assert {n for n in names if n not in found and f"{n}_job" not in found} == set()
