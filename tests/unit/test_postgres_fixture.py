"""The PostgreSQL the tests get is a real, recent server, and each test gets its own database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.postgres import PostgresServer


@pytest.mark.postgres
def test_a_fresh_database_stores_and_returns_rows(postgres_server: PostgresServer) -> None:
    url = postgres_server.url(postgres_server.create_database())
    assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (id serial primary key, v text not null)"))
            conn.execute(sa.text("insert into t (v) values ('uno'), ('due')"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select v from t order by id")).scalars().all() == [
                "uno",
                "due",
            ]
            version = int(conn.execute(sa.text("show server_version_num")).scalar_one())
            assert conn.dialect.name == "postgresql"
    finally:
        engine.dispose()
    assert version >= 130000


@pytest.mark.postgres
def test_databases_are_isolated(postgres_server: PostgresServer) -> None:
    first = sa.create_engine(postgres_server.url(postgres_server.create_database()))
    second = sa.create_engine(postgres_server.url(postgres_server.create_database()))
    try:
        with first.begin() as conn:
            conn.execute(sa.text("create table only_here (v int)"))
        assert sa.inspect(first).get_table_names() == ["only_here"]
        assert sa.inspect(second).get_table_names() == []
    finally:
        first.dispose()
        second.dispose()


def test_registry_url_covers_both_databases(
    registry_url: str, request: pytest.FixtureRequest
) -> None:
    engine = sa.create_engine(registry_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (v text)"))
            conn.execute(sa.text("insert into t values ('x')"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select v from t")).scalar_one() == "x"
            dialect = conn.dialect.name
    finally:
        engine.dispose()
    expected = {"sqlite": "sqlite", "postgres": "postgresql"}
    assert dialect == expected[request.node.callspec.params["registry_url"]]


@pytest.mark.postgres
def test_stop_removes_the_cluster() -> None:
    server = PostgresServer()
    engine = sa.create_engine(server.url())
    with engine.connect() as conn:
        assert conn.execute(sa.text("select 1")).scalar_one() == 1
    engine.dispose()
    server.stop()
    assert not server.dir.exists()
    with pytest.raises(sa.exc.OperationalError):
        sa.create_engine(server.url()).connect()
