"""Exchange private keys at rest: encrypted with the home's passphrase, clear errors when
it is missing or wrong, and homes of before (raw keys) readable and migrated by one command."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app
from hub.exchange import crypto
from hub.exchange.errors import ExchangeError
from hub.exchange.home import init_home, open_home
from hub.exchange.keyfile import PASSPHRASE_ENV, WORKER_PASSPHRASE_ENV
from hub.exchange.push import add_worker, open_worker_home
from tests.exchange.conftest import PASSPHRASE

runner = CliRunner()


def _home(tmp_path: Path) -> Path:
    init_home(tmp_path / "A", party="DISTRETTO_A", pseudonym_domain="DOM_A")
    return tmp_path / "A"


def test_new_keys_are_encrypted_with_the_passphrase(tmp_path: Path) -> None:
    path = _home(tmp_path)
    home = open_home(path)
    raw_signing = crypto.private_bytes(home.signing_key)
    raw_kem = home.kem_key.to_bytes()
    for name, raw, purpose in (
        ("signing.key", raw_signing, "signing"),
        ("hpke.key", raw_kem, "hpke"),
    ):
        file = path / "keys" / name
        data = file.read_bytes()
        assert raw not in data and crypto.b64e(raw) not in data.decode()
        assert raw[:16] not in data and raw[-16:] not in data
        doc = json.loads(data)
        assert doc["format"] == "raccordo-exchange-key/1" and doc["purpose"] == purpose
        assert doc["kdf"]["kind"] == "scrypt"
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert PASSPHRASE not in "".join(p.read_text() for p in path.rglob("*") if p.is_file())
    assert home.keys_encrypted


def test_a_missing_or_wrong_passphrase_is_said_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _home(tmp_path)
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ExchangeError) as e:
        open_home(path)
    assert e.value.message.endswith("the exchange keys are encrypted and no passphrase was given")
    assert PASSPHRASE_ENV in (e.value.hint or "")
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    with pytest.raises(ExchangeError, match="wrong passphrase, or the file was altered"):
        open_home(path)
    # Read-only views need no passphrase at all.
    assert open_home(path, keys=False).party == "DISTRETTO_A"
    for args in (["exchange", "status"], ["convenzioni", "list"], ["erasure", "status"]):
        res = runner.invoke(app, [*args, "--home", str(path)])
        assert res.exit_code == 0, (args, res.output)
    res = runner.invoke(app, ["exchange", "keys", "--home", str(path)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "wrong passphrase" in " ".join(res.output.split())


def test_new_keys_need_a_passphrase_of_some_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ExchangeError, match="no passphrase to encrypt the exchange keys"):
        _home(tmp_path)
    monkeypatch.setenv(PASSPHRASE_ENV, "short")
    with pytest.raises(ExchangeError, match="too short"):
        _home(tmp_path)
    assert not (tmp_path / "A" / "keys" / "signing.key").exists()


def test_an_altered_or_swapped_key_file_does_not_open(tmp_path: Path) -> None:
    path = _home(tmp_path)
    keys = path / "keys"
    signing, hpke = (keys / "signing.key").read_bytes(), (keys / "hpke.key").read_bytes()
    (keys / "signing.key").write_bytes(hpke)
    with pytest.raises(ExchangeError, match="holds the hpke key, not the signing key"):
        open_home(path)
    doc = json.loads(signing)
    doc["purpose"] = "hpke"  # relabelled: the header is authenticated too
    (keys / "signing.key").write_bytes(signing)
    (keys / "hpke.key").write_text(json.dumps(doc))
    with pytest.raises(ExchangeError, match="wrong passphrase, or the file was altered"):
        open_home(path)


def test_raw_keys_of_before_still_open_and_one_command_encrypts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _home(tmp_path)
    home = open_home(path)
    public = home.public_keys()
    # As `exchange init` wrote them before: the raw bytes, mode 0600.
    (path / "keys" / "signing.key").write_bytes(crypto.private_bytes(home.signing_key))
    (path / "keys" / "hpke.key").write_bytes(home.kem_key.to_bytes())
    monkeypatch.delenv(PASSPHRASE_ENV)
    old = open_home(path)
    assert old.public_keys() == public and not old.keys_encrypted
    status = runner.invoke(app, ["exchange", "status", "--home", str(path)])
    assert status.exit_code == 0 and "exchange encrypt-keys" in status.output
    # Without a passphrase the migration says what to set.
    res = runner.invoke(app, ["exchange", "encrypt-keys", "--home", str(path)])
    assert res.exit_code != 0 and PASSPHRASE_ENV in res.output
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    res = runner.invoke(app, ["exchange", "encrypt-keys", "--home", str(path)])
    assert res.exit_code == 0, res.output
    assert "Encrypted signing.key, hpke.key" in res.output
    migrated = open_home(path)
    assert migrated.keys_encrypted and migrated.public_keys() == public
    again = runner.invoke(app, ["exchange", "encrypt-keys", "--home", str(path)])
    assert again.exit_code == 0 and "already encrypted" in again.output
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ExchangeError, match="no passphrase was given"):
        open_home(path)


def test_a_raw_key_of_before_that_begins_with_a_brace_is_still_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One raw key in 256 begins with "{", the first byte of an encrypted key file: the two are
    # told apart by length (CI once failed on such a key, drawn at random).
    path = _home(tmp_path)
    raw_signing, raw_kem = b"{" + bytes(range(1, 32)), b"{" + bytes(range(1, 96))
    (path / "keys" / "signing.key").write_bytes(raw_signing)
    (path / "keys" / "hpke.key").write_bytes(raw_kem)
    monkeypatch.delenv(PASSPHRASE_ENV)
    old = open_home(path)
    assert not old.keys_encrypted
    assert crypto.private_bytes(old.signing_key) == raw_signing
    assert old.kem_key.to_bytes() == raw_kem
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    res = runner.invoke(app, ["exchange", "encrypt-keys", "--home", str(path)])
    assert res.exit_code == 0, res.output
    migrated = open_home(path)
    assert migrated.keys_encrypted and migrated.kem_key.to_bytes() == raw_kem


def test_a_push_workers_key_is_encrypted_with_the_workers_own_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = open_home(_home(tmp_path))
    out = tmp_path / "worker-push"
    monkeypatch.delenv(WORKER_PASSPHRASE_ENV)
    with pytest.raises(ExchangeError) as e:
        add_worker(hub, "syn-worker", ["SYN"], out)
    assert WORKER_PASSPHRASE_ENV in (e.value.hint or "") and PASSPHRASE_ENV in (e.value.hint or "")
    monkeypatch.setenv(WORKER_PASSPHRASE_ENV, "the worker's own passphrase")
    made = add_worker(hub, "syn-worker", ["SYN"], out)
    file = out / "keys" / "signing.key"
    raw = crypto.private_bytes(made.signing_key)
    assert json.loads(file.read_bytes())["purpose"] == "signing" and raw not in file.read_bytes()
    # On the worker: its own passphrase opens it, the hub's does not.
    with pytest.raises(ExchangeError, match="wrong passphrase"):
        open_worker_home(out)
    monkeypatch.setenv(PASSPHRASE_ENV, "the worker's own passphrase")
    assert crypto.private_bytes(open_worker_home(out).signing_key) == raw
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ExchangeError, match="no passphrase was given"):
        open_worker_home(out)
    # A folder of before (a raw key) still opens, and one command encrypts it.
    file.write_bytes(raw)
    assert crypto.private_bytes(open_worker_home(out).signing_key) == raw
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    res = runner.invoke(app, ["push", "encrypt-key", str(out)])
    assert res.exit_code == 0 and "Encrypted" in res.output, res.output
    assert crypto.private_bytes(open_worker_home(out).signing_key) == raw
    assert "already encrypted" in runner.invoke(app, ["push", "encrypt-key", str(out)]).output
