"""The loaders' size and depth limits (system.loaders.check_shape): what they count."""

from __future__ import annotations

import pytest

from system import loaders
from system.errors import QsplitInputError
from system.loaders import MAX_DEPTH, check_shape, parse_json, parse_yaml


def test_depth_limit_is_exact() -> None:
    ok = "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1)
    assert parse_json(ok, "doc") is not None
    deep = "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    with pytest.raises(QsplitInputError, match=f"^doc: nested deeper than {MAX_DEPTH} levels$"):
        parse_json(deep, "doc")
    empty_at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH       # an empty list holds nothing
    assert parse_json(empty_at_limit, "doc") is not None


def test_values_count_keys_values_and_items(monkeypatch: pytest.MonkeyPatch) -> None:
    # root 1 + 2 keys + 2 values + 3 items = 8 values
    doc = {"a": [1, 2, 3], "b": 4}
    monkeypatch.setattr(loaders, "MAX_VALUES", 8)
    assert check_shape(doc, "doc") is doc
    monkeypatch.setattr(loaders, "MAX_VALUES", 7)
    with pytest.raises(QsplitInputError, match=r"^doc: more than 7 values"):
        check_shape(doc, "doc")


def test_a_structure_that_contains_itself_is_refused() -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(QsplitInputError, match="nested deeper"):
        check_shape(loop, "doc")


def test_yaml_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    with pytest.raises(QsplitInputError, match=r"more than .* values"):
        parse_yaml("\n".join(lines), "doc")


def test_container_subclasses_are_walked_too() -> None:
    from collections import OrderedDict

    class Items(list):
        pass

    deep: object = 1
    for _ in range(MAX_DEPTH):
        deep = OrderedDict(x=Items([deep]))
    with pytest.raises(QsplitInputError, match="nested deeper"):
        check_shape({"doc": deep}, "doc")
