"""The example connector package of ``examples/`` installed into a throw-away virtual
environment, where its one-line contract suite runs against the installed ``hub.sdk``.

The new environment gets Raccordo and its dependencies from this project's environment (a
``.pth`` line adding its site-packages); the example itself is really built and installed
there, with its entry point, by pip (its build backend, setuptools, comes from pip's cache or
the package index, as for any package).
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "raccordo-sportello"


@pytest.mark.slow
def test_example_package_installs_and_passes_the_contract_suite(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()] or [
        sysconfig.get_paths()["purelib"]
    ]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
    (Path(purelib) / "raccordo-parent.pth").write_text(lines)
    # A copy, so the build leaves nothing in the repository.
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # Installed, not imported from the source folder: run from elsewhere.
    res = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(src),
            str(src / "tests"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "11 passed" in res.stdout, res.stdout[-2000:]
    where = subprocess.run(
        [str(python), "-c", "import raccordo_sportello; print(raccordo_sportello.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert where.startswith(purelib), where
    listed = subprocess.run(
        [str(python), "-m", "hub", "connectors", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert "sportello" in listed.stdout, listed.stdout + listed.stderr
