"""engine.schema: a file's validation errors in plain words, each naming the place, the field as
a dotted path, the problem and what is allowed (read off the field's type, choices and bounds)."""

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from engine.schema import ConfigError, validated


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, title="limit")

    gpus: Annotated[int, Field(ge=0)] | None = None


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["a", "b"] = "a"
    ratio: float = Field(0.5, gt=0, le=1)
    steps: int = Field(1, ge=1, le=10)
    tags: list[str] = Field(default_factory=list)
    limits: Limits | None = None
    code: str = Field(description="a code from the manual")


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    entries: dict[str, Entry] = Field(default_factory=dict)


@pytest.mark.parametrize("entry, problem", [
    ({"kind": "c"}, "entries.e.kind: must be one of a, b, got 'c'"),
    ({"ratio": 0}, "entries.e.ratio: must be a number > 0 and <= 1, got 0"),
    ({"steps": 11}, "entries.e.steps: must be a whole number from 1 to 10, got 11"),
    ({"steps": True}, "entries.e.steps: must be a whole number from 1 to 10, got True"),
    ({"tags": ["x", 3]}, "entries.e.tags[1]: must be text, got 3"),
    ({"limits": {"gpu": 1}}, "entries.e.limits.gpu: unknown limit; allowed: gpus"),
    ({"limits": {"gpus": -1}},
     "entries.e.limits.gpus: must be a whole number >= 0 or null, got -1"),
    ({"code": 5}, "entries.e.code: must be a code from the manual, got 5"),
])
def test_each_problem_names_the_place_the_field_and_what_is_allowed(entry, problem):
    with pytest.raises(ConfigError) as refused:
        validated(Document, {"entries": {"e": {"code": "x", **entry}}}, "doc.yaml")
    assert refused.value.problems == [f"doc.yaml: {problem}"]


def test_every_problem_is_listed_and_a_missing_field_says_what_it_takes():
    with pytest.raises(ConfigError) as refused:
        validated(Document, {"entries": {"e": {"steps": 0}, 7: {"code": "x"}}}, "doc.yaml")
    assert refused.value.problems == [
        "doc.yaml: entries.e.steps: must be a whole number from 1 to 10, got 0",
        "doc.yaml: entries.e.code: is required: a code from the manual",
        "doc.yaml: entries[7]: names must be text, got 7",
    ]
