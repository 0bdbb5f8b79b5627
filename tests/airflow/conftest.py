"""The real Airflow (installed by `make install`), run as a separate program.

Every test gets its own ``AIRFLOW_HOME`` with a SQLite metadata database, copied from
one migrated once per session, and runs the ``airflow`` command of the project's venv
with ``dags/`` as the DAGs folder. Nothing of Airflow is imported into the test process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
AIRFLOW = Path(sys.executable).parent / "airflow"


def airflow_env(home: Path, config: Path | None = None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "RACCORDO_", "_AIRFLOW"))
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        PYTHONWARNINGS="ignore",
    )
    if config is not None:
        env["RACCORDO_CONFIG"] = str(config)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow metadata database after `airflow db migrate`, made once per session."""
    if not AIRFLOW.is_file():
        pytest.fail(
            f"{AIRFLOW} is missing: Airflow is installed by `make install` "
            "(the `airflow` extra of pyproject.toml)",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("airflow-template")
    out = subprocess.run(
        [str(AIRFLOW), "db", "migrate"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return home / "airflow.db"


@dataclass
class Airflow:
    """One AIRFLOW_HOME; ``run`` executes the airflow command there and keeps its output."""

    home: Path
    config: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(AIRFLOW), *args],
            env=airflow_env(self.home, self.config, **{**self.extra_env, **env}),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )
        self.outputs.append(out.stdout + out.stderr)
        return out

    def dags_test(self, dag_id: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run("dags", "test", dag_id, **env)

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.home / 'airflow.db'}"


AirflowFactory = Callable[..., Airflow]


@pytest.fixture
def airflow(tmp_path: Path, migrated_airflow_db: Path) -> AirflowFactory:
    def make(config: Path, **extra_env: str) -> Airflow:
        home = tmp_path / "airflow-home"
        home.mkdir()
        shutil.copy2(migrated_airflow_db, home / "airflow.db")
        return Airflow(home, config, dict(extra_env))

    return make
