"""The connector contract suite (BLUEPRINT §9): every connector passes it with one line.

    from hub.sdk.testing import connector_contract_tests

    TestMine = connector_contract_tests(lambda: MyConnector(MyConfig(...)))

Shipped in the package, so that a connector living in its own repository runs
the same checks as the built-in ones (it needs ``pytest`` installed).

Like the Singer SDK's ``get_tap_test_class``: the returned class holds one
test per rule of the contract, so a failure names the rule that was broken.
The factory should build the connector over a *small* source (at most
``stream_limit`` records per stream): the suite reads every stream in full,
several times.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    FieldRole,
    ProvisionalPartsLeft,
    RawRecord,
    RecordPart,
    SourceError,
    StateCheckpoint,
    Stream,
    UnitComplete,
)
from hub.plugins import get_plugins
from hub.pseudonyms import IdentifierType

#: A connector only reads: these pseudonymise or write, which is the pipeline's job.
FORBIDDEN_IMPORTS = ("hub.pipeline", "hub.registry", "hub.pseudonyms.pseudonymiser")
SECRET_WORDS = ("token", "password", "secret", "passphrase")
#: Field names that hold a codice fiscale: they must never be plain DATA.
CF_NAME = re.compile(r"(^|_)(cf|codice_?fiscale|cod_?fisc)($|_)", re.I)
#: Shorter identifying values (a Belfiore code, "Lia") match too much by chance to be checked.
MIN_LEAK_LEN = 5
#: How many checkpoints the resume test restarts from (evenly spread).
RESUME_POINTS = 5


def connector_contract_tests(
    connector_factory: Callable[[], Connector],
    *,
    stream_limit: int = 200,
    registered: bool = True,
) -> type:
    """A pytest test class checking the connector that ``connector_factory`` builds.

    ``stream_limit``: most records the suite accepts from one stream (reading
    more fails, so a runaway generator cannot hang the tests).
    ``registered=False`` for a connector defined in a test module rather than
    installed through the ``raccordo.plugins`` entry points.
    """

    def read_all(conn: Connector, stream: str, state: dict[str, Any]) -> list[Any]:
        items: list[Any] = []
        records = 0
        provisional: str | None = None  # the unit of provisional parts not yet confirmed
        for item in conn.read(stream, state):
            if provisional is not None and not (isinstance(item, RecordPart) and item.provisional):
                provisional = None  # confirmed (or refused) by this item
            if isinstance(item, RecordPart) and item.provisional:
                provisional = item.unit
            if isinstance(item, RecordPart):
                # What a first read loads of it, checked to belong to it.
                inner: list[Any] = list(item.items())
                for x in inner:
                    assert isinstance(x, RawRecord | SourceError), (
                        f"{stream}: a part of {item.unit!r} holds a {type(x).__name__}"
                    )
                    if isinstance(x, RawRecord):
                        assert x.unit == item.unit, (
                            f"{stream}: a record of unit {x.unit!r} in a part of {item.unit!r}"
                        )
                    else:
                        assert x.scope == "record", (
                            f"{stream}: a part holds a unit-scope source error (yield it alone)"
                        )
                assert isinstance(item.digest, bytes) and len(item.digest) >= 16, (
                    f"{stream}: a part's digest is at least 16 bytes"
                )
            else:
                inner = [item]
            for x in inner:
                items.append(x)
                records += isinstance(x, RawRecord)
            if records > stream_limit or len(items) > 10 * stream_limit + 10:
                raise AssertionError(
                    f"{stream}: read more than {stream_limit} records; build the connector "
                    "over a smaller source for the contract suite, or raise stream_limit"
                )
        assert provisional is None, f"{stream}, unit {provisional!r}: {ProvisionalPartsLeft()}"
        return items

    def records_of(items: list[Any]) -> list[RawRecord]:
        return [i for i in items if isinstance(i, RawRecord)]

    class ConnectorContract:
        def test_identity(self) -> None:
            conn = connector_factory()
            assert conn.name, "set a connector name (the `type` used in raccordo.toml)"
            assert re.fullmatch(r"[a-z][a-z0-9_]*", conn.name), (
                f"connector name {conn.name!r}: use lower case letters, digits and _"
            )
            assert conn.summary, "set a one-line summary (shown by `raccordo connectors list`)"
            assert issubclass(conn.config_class, ConnectorConfig), (
                "config_class must subclass hub.connector.ConnectorConfig"
            )
            assert isinstance(conn.config, conn.config_class)

        def test_config_is_frozen_and_closed(self) -> None:
            conn = connector_factory()
            cfg_class = conn.config_class
            assert cfg_class.model_config.get("frozen") is True, "the config must be frozen"
            assert cfg_class.model_config.get("extra") == "forbid", (
                "the config must refuse unknown keys (a misspelt setting is an error)"
            )
            data = conn.config.model_dump()
            with pytest.raises(ValidationError):
                cfg_class.model_validate({**data, "no_such_setting_xyz": 1})
            for name in type(conn.config).model_fields:
                with pytest.raises(ValidationError):
                    setattr(conn.config, name, getattr(conn.config, name))

        def test_secrets_are_secret(self) -> None:
            conn = connector_factory()
            for name, f in type(conn.config).model_fields.items():
                if any(w in name.lower() for w in SECRET_WORDS):
                    assert f.annotation is not None and "SecretStr" in str(f.annotation), (
                        f"config field {name} must be a pydantic SecretStr"
                    )
                    value = getattr(conn.config, name)
                    if isinstance(value, SecretStr) and value.get_secret_value():
                        assert value.get_secret_value() not in repr(conn.config)
                        assert value.get_secret_value() not in str(conn.config)

        def test_check_answers(self) -> None:
            result = connector_factory().check()
            assert isinstance(result, CheckResult), "check() returns a CheckResult"
            assert result.message, "check() explains its answer"

        def test_streams_are_declared(self) -> None:
            streams = connector_factory().streams()
            assert streams, "a connector reads at least one stream"
            names = [s.name for s in streams]
            assert len(names) == len(set(names)), "stream names must be unique"
            for s in streams:
                _check_stream(s)

        def test_read_yields_only_contract_items(self) -> None:
            conn = connector_factory()
            for stream in conn.streams():
                declared = {f.name for f in stream.fields}
                items = read_all(conn, stream.name, {})
                assert items, f"{stream.name}: nothing read"
                assert isinstance(items[-1], StateCheckpoint), (
                    f"{stream.name}: reading must end with a StateCheckpoint"
                )
                for item in items:
                    assert isinstance(
                        item, RawRecord | StateCheckpoint | SourceError | UnitComplete
                    ), f"unexpected item {type(item).__name__}"
                    if isinstance(item, RawRecord):
                        assert item.stream == stream.name, (
                            f"a record of stream {item.stream!r} read from {stream.name!r}"
                        )
                        assert set(item.data) <= declared, (
                            f"{stream.name}: undeclared fields {sorted(set(item.data) - declared)}"
                        )
                        if item.key is None:
                            missing = [k for k in stream.source_key if k not in item.data]
                            assert not missing, (
                                f"{stream.name} {item.location}: no source key field {missing}"
                            )
                    if isinstance(item, StateCheckpoint):
                        assert isinstance(item.state, dict)

        def test_nothing_shows_identifiers(self) -> None:
            conn = connector_factory()
            for stream in conn.streams():
                idents = {f.name for f in stream.fields if f.role is not FieldRole.DATA}
                for item in read_all(conn, stream.name, {}):
                    if isinstance(item, RawRecord):
                        for name in idents:
                            v = str(item.data.get(name) or "").strip()
                            if len(v) < MIN_LEAK_LEN:
                                continue
                            assert v not in item.location, (
                                f"{stream.name}: the location of a record shows its {name}"
                            )
                            assert v not in repr(item), (
                                f"{stream.name}: the repr of a record shows its {name}"
                            )
                        assert item.location, f"{stream.name}: give records a location"

        def test_resume_from_a_checkpoint_loses_and_repeats_nothing(self) -> None:
            conn = connector_factory()
            resumed = 0
            for stream in conn.streams():
                items = read_all(conn, stream.name, {})
                keys = [_key(stream.source_key, r) for r in records_of(items)]
                cuts = [n for n, i in enumerate(items[:-1]) if isinstance(i, StateCheckpoint)]
                step = max(1, len(cuts) // RESUME_POINTS)
                for cut in cuts[::step]:
                    before = [_key(stream.source_key, r) for r in records_of(items[:cut])]
                    after = [
                        _key(stream.source_key, r)
                        for r in records_of(read_all(conn, stream.name, items[cut].state))
                    ]
                    assert before + after == keys, (
                        f"{stream.name}: resuming from {items[cut].state} must yield exactly "
                        f"the rest ({len(after)} records instead of {len(keys) - len(before)})"
                    )
                    resumed += 1
            if resumed == 0:
                pytest.fail(
                    "no stream yielded a StateCheckpoint before its last one, so resuming "
                    "cannot be checked: build the connector over a source with several units "
                    "or a small checkpoint interval"
                )

        def test_final_state_reads_nothing_new(self) -> None:
            conn = connector_factory()
            for stream in conn.streams():
                final = read_all(conn, stream.name, {})[-1].state
                again = records_of(read_all(conn, stream.name, final))
                assert again == [], (
                    f"{stream.name}: reading from the final state must yield no record"
                )

        def test_never_pseudonymises_nor_writes(self) -> None:
            module = inspect.getmodule(type(connector_factory()))
            assert module is not None
            for path, imported in _imports(module):
                assert not imported.startswith(FORBIDDEN_IMPORTS), (
                    f"{path} imports {imported}: a connector only reads, "
                    "the pipeline pseudonymises and writes"
                )

        def test_registered_through_entry_points(self) -> None:
            conn = connector_factory()
            assert get_plugins().connectors().get(conn.name) is type(conn), (
                f"{conn.name} is not registered in the entry-point group raccordo.plugins"
            )

    if not registered:  # a connector defined inside a test module, not an installed plugin
        del ConnectorContract.test_registered_through_entry_points
    return ConnectorContract


def _check_stream(s: Stream) -> None:
    fields = {f.name: f for f in s.fields}
    assert len(fields) == len(s.fields), f"{s.name}: duplicate field names"
    assert s.source_key, f"{s.name}: declare a source_key"
    assert set(s.source_key) <= set(fields), f"{s.name}: source key fields must be declared"
    for f in s.fields:
        where = f"{s.name}.{f.name}"
        if f.role is not FieldRole.IDENTIFIER:
            assert f.identifier_type is None and f.type_field is None, (
                f"{where}: identifier_type/type_field on a {f.role.value} field would be "
                "ignored; declare it FieldRole.IDENTIFIER"
            )
            assert not f.derive_birth_year_and_sex and f.namespace_field is None, (
                f"{where}: identifier options on a {f.role.value} field"
            )
            assert f.role is FieldRole.PERSONAL or not CF_NAME.search(f.name), (
                f"{where} looks like a codice fiscale: declare it IDENTIFIER or PERSONAL"
            )
            continue
        # identifier_type None means "detect from the value" (CF, CF_PROVV, STP, ENI)
        if f.type_field is not None:
            assert f.type_field in fields, f"{where}: type_field {f.type_field!r} not declared"
        if f.namespace_field is not None:
            assert f.namespace_field in fields, (
                f"{where}: namespace_field {f.namespace_field!r} not declared"
            )
            assert f.identifier_type in (IdentifierType.LOCAL, None), (
                f"{where}: namespace_field only applies to LOCAL identifiers"
            )
        if f.derive_birth_year_and_sex:
            assert f.identifier_type in (IdentifierType.CF, None), (
                f"{where}: birth year and sex can only be derived from a codice fiscale"
            )


def _imports(module: ModuleType) -> Iterator[tuple[str, str]]:
    """(file, absolute module name) of every import in the connector's module,
    and in every module of its package when the connector lives in a package."""
    source = inspect.getsourcefile(module)
    assert source is not None
    path = Path(source)
    is_package = path.name == "__init__.py"
    files = sorted(path.parent.rglob("*.py")) if is_package else [path]
    package = module.__name__ if is_package else module.__name__.rpartition(".")[0]
    for file in files:
        rel = file.relative_to(path.parent).parts
        file_pkg = ".".join([package, *rel[:-1]])  # the package relative imports start from
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield str(file), alias.name
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = importlib.util.resolve_name("." * node.level + base, file_pkg)
                yield str(file), base
                for alias in node.names:  # `from hub import pipeline`
                    yield str(file), f"{base}.{alias.name}"


def _key(source_key: tuple[str, ...], record: RawRecord) -> str:
    if record.key is not None:
        return record.key
    return "|".join(str(record.data.get(k, "")) for k in source_key)
