"""docs/exchange.md cannot drift: the commands it lists exist, its exit codes are the code's."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from hub.cli import app
from hub.exchange import errors

DOC = Path(__file__).resolve().parents[2] / "docs" / "exchange.md"
runner = CliRunner()


def test_every_documented_command_exists() -> None:
    text = DOC.read_text()
    commands = set()
    for line in text.splitlines():
        if line.startswith("| `raccordo "):
            for m in re.finditer(r"`raccordo ([a-z-]+(?: [a-z-]+)?)", line):
                commands.add(m.group(1))
            for m in re.finditer(r"/ `([a-z-]+) ", line):  # "validate … / sign …" shorthand
                commands.add(f"convenzioni {m.group(1)}")
    assert len(commands) >= 14, commands
    for cmd in sorted(commands):
        res = runner.invoke(app, [*cmd.split(), "--help"])
        assert res.exit_code == 0, f"raccordo {cmd}: {res.output}"


def test_documented_exit_codes_match() -> None:
    text = " ".join(DOC.read_text().split())
    for cls, words in (
        (errors.ConvenzioneError, "a convenzione is invalid"),
        (errors.PackageRefused, "a package is refused"),
        (errors.LogTampered, "the log was altered"),
        (errors.PeerUnavailable, "the other party or the pseudonymisation service"),
    ):
        assert f"{cls.exit_code} {words}" in text, cls
