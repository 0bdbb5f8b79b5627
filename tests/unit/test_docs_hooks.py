"""Every hook a plugin can implement is documented, with its exact signature
(the docs are the plugin author's contract; datasette's test_docs.py idea)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from hub import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugin_hooks.md"


def hook_names() -> list[str]:
    """Functions of hub/hookspecs.py marked as pluggy hook specifications."""
    marker = f"{hookspecs.PROJECT}_spec"
    return [
        name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, marker)
    ]


def undocumented(doc: str) -> list[str]:
    """Hooks lacking a ``## name`` heading, or whose signature the docs do not show."""
    problems = []
    for name in hook_names():
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        section = re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", doc, re.M | re.S)
        if section is None:
            problems.append(f"{name}: no '## {name}' heading")
        elif f"{name}({params})" not in section.group(1):
            problems.append(f"{name}: signature {name}({params}) not shown under its heading")
        elif "versionadded" not in section.group(1):
            problems.append(f"{name}: no 'versionadded' line")
    return problems


def test_the_hookspecs_are_found() -> None:
    assert hook_names() == ["raccordo_register_connectors", "raccordo_register_mapping_dirs"]


def test_every_hook_is_documented_with_its_signature() -> None:
    assert undocumented(DOC.read_text(encoding="utf-8")) == []


def test_the_check_fails_when_a_hook_is_undocumented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    without = re.sub(
        r"^## raccordo_register_mapping_dirs\n.*?(?=^## |\Z)", "", doc, flags=re.M | re.S
    )
    assert without != doc
    assert undocumented(without) == [
        "raccordo_register_mapping_dirs: no '## raccordo_register_mapping_dirs' heading"
    ]
    wrong = doc.replace("raccordo_register_connectors(register)", "raccordo_register_connectors()")
    assert undocumented(wrong) == [
        "raccordo_register_connectors: signature raccordo_register_connectors(register) "
        "not shown under its heading"
    ]
