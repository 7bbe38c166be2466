"""The trainer protocol's names: checkpoint folders are named and parsed by one pair of functions,
and the facts the issue found repeated (checkpoint names, precision -> dtype, adapter merge) are
each written in one module."""

import ast
from pathlib import Path

import pytest

from engine.jobfiles import JobPaths, checkpoint_name, checkpoint_step

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted([*REPO.glob("engine/**/*.py"), *REPO.glob("ui/*.py"), REPO / "app.py"])


@pytest.mark.parametrize("step", [0, 1, 30, 10**12])
def test_a_checkpoint_name_parses_back_to_its_step(step):
    assert checkpoint_step(checkpoint_name(step)) == step


@pytest.mark.parametrize("name", [None, 5, "", "latest", "checkpoint-", "checkpoint-x",
                                  "checkpoint--1", "checkpoint-1.5", "checkpoint-5\n",
                                  "checkpoint-５", "checkpoint-5/../..", "../checkpoint-5",
                                  "merged-checkpoint-5", "Checkpoint-5", " checkpoint-5"])
def test_anything_but_a_bare_checkpoint_name_has_no_step(name):
    assert checkpoint_step(name) is None


def test_checkpoints_are_listed_by_step_not_by_name(tmp_path):
    for name in ("checkpoint-10", "checkpoint-9", "checkpoint-100", "checkpoint-x", "model"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-11").write_text("a file, not a checkpoint")
    assert [p.name for p in JobPaths(tmp_path).checkpoints()] == \
        ["checkpoint-9", "checkpoint-10", "checkpoint-100"]


def spellings(path: Path):
    """The places in a module that spell a checkpoint folder's name, map a precision to a torch
    dtype, or merge an adapter, by hand."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr) and any(
                isinstance(part, ast.Constant) and str(part.value).endswith("checkpoint-")
                for part in node.values):
            yield node.lineno, "checkpoint name"
        elif isinstance(node, ast.Constant) and node.value in ("checkpoint-", "checkpoint-*"):
            yield node.lineno, "checkpoint name"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("split", "rsplit") and node.args and \
                isinstance(node.args[0], ast.Constant) and node.args[0].value == "-":
            yield node.lineno, "checkpoint name"  # a step cut out of a name by hand
        elif isinstance(node, ast.Attribute) and node.attr in ("bfloat16", "float16"):
            yield node.lineno, "precision -> dtype"
        elif isinstance(node, ast.Attribute) and node.attr == "merge_and_unload":
            yield node.lineno, "adapter merge"


def test_each_fact_is_written_in_one_module():
    owners = {"checkpoint name": "engine/jobfiles.py",
              "precision -> dtype": "engine/trainer/models.py",
              "adapter merge": "engine/trainer/models.py"}
    elsewhere = [f"{path.relative_to(REPO)}:{line} {fact}" for path in SOURCES
                 for line, fact in spellings(path) if str(path.relative_to(REPO)) != owners[fact]]
    assert elsewhere == []
    assert {fact for path in SOURCES for _, fact in spellings(path)} == set(owners)
