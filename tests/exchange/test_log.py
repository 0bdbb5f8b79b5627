"""The flow log: RFC 9162 hashing and proofs, and `raccordo log verify` naming each tampering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from hub.cli import app
from hub.exchange import crypto, merkle
from hub.exchange.home import Home
from hub.exchange.log import verify
from tests.exchange.conftest import Parties

runner = CliRunner()


def test_rfc9162_hashing_of_known_values() -> None:
    # Leaf and node hashing carry the 0x00 / 0x01 prefixes of RFC 9162 §2.1.1.
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    a, b, c = (merkle.leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert merkle.root([a, b, c]) == merkle.node_hash(merkle.node_hash(a, b), c)
    assert merkle.root([]) == crypto.sha256(b"")


@given(st.integers(min_value=1, max_value=70), st.data())
def test_proofs_verify_and_fail_when_they_should(n: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(n)]
    cr = merkle.CompactRange()
    for leaf in leaves:
        cr.append(leaf)
    root = merkle.root(leaves)
    assert cr.root() == root
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle.inclusion_proof(i, leaves)
    assert merkle.verify_inclusion(i, n, leaves[i], proof, root)
    assert not merkle.verify_inclusion(i, n, merkle.leaf_hash(b"other"), proof, root)
    m = data.draw(st.integers(min_value=1, max_value=n))
    cproof = merkle.consistency_proof(m, leaves)
    assert merkle.verify_consistency(m, n, merkle.root(leaves[:m]), root, cproof)
    if m < n:
        forged = [*leaves[: m - 1], merkle.leaf_hash(b"edited"), *leaves[m:]]
        assert not merkle.verify_consistency(m, n, merkle.root(forged[:m]), root, cproof)


def _filled(home: Home, n: int = 6) -> Path:
    for i in range(n):
        home.log.append("sent", package=f"{i:032x}", convenzione="c", peer="B", rows=i)
    return home.path / "log" / "entries.jsonl"


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines()


def _problems(home: Home, heads: list[dict[str, object]] | None = None) -> list[str]:
    return verify(home.path / "log", crypto.public_b64(home.signing_key), heads or []).problems


def test_an_untouched_log_verifies(parties: Parties) -> None:
    _filled(parties.a)
    assert _problems(parties.a) == []
    res = runner.invoke(app, ["log", "verify", "--home", str(parties.a.path)])
    assert res.exit_code == 0, res.output
    assert "6 entries, 6 signed heads, all consistent" in res.output


def test_an_edited_entry_is_named(parties: Parties) -> None:
    entries = _filled(parties.a)
    lines = _lines(entries)
    lines[2] = lines[2].replace('"rows":2', '"rows":200')
    entries.write_text("\n".join(lines) + "\n")
    assert _problems(parties.a) == ["entry #2 edited: it no longer matches its signed head"]
    res = runner.invoke(app, ["log", "verify", "--home", str(parties.a.path)])
    assert res.exit_code == 22
    assert "entry #2 edited" in res.output


def test_a_deleted_entry_is_named(parties: Parties) -> None:
    entries = _filled(parties.a)
    lines = _lines(entries)
    del lines[3]
    entries.write_text("\n".join(lines) + "\n")
    assert _problems(parties.a) == ["entry #3 deleted"]


def test_reordered_entries_are_named(parties: Parties) -> None:
    entries = _filled(parties.a)
    lines = _lines(entries)
    lines[1], lines[4] = lines[4], lines[1]
    entries.write_text("\n".join(lines) + "\n")
    assert _problems(parties.a) == [
        "entry #2 found after entry #4 (entries reordered or duplicated)",
        "entry #3 found after entry #4 (entries reordered or duplicated)",
        "entry #1 found after entry #4 (entries reordered or duplicated)",
    ]


def test_an_entry_renumbered_to_hide_a_deletion_is_caught(parties: Parties) -> None:
    entries = _filled(parties.a)
    lines = [json.loads(x) for x in _lines(entries)]
    del lines[3]
    for e in lines[3:]:
        e["seq"] -= 1
    entries.write_text("\n".join(crypto.canonical(e).decode() for e in lines) + "\n")
    problems = _problems(parties.a)
    assert "entry #3 edited: it no longer matches its signed head" in problems
    assert "entry #5 cut off (the log was truncated)" in problems


def test_truncation_is_caught_by_the_heads_and_by_the_other_party(parties: Parties) -> None:
    entries = _filled(parties.a)
    held_by_peer = [
        json.loads(x) for x in (parties.a.path / "log" / "heads.jsonl").read_text().splitlines()
    ]
    lines = _lines(entries)
    entries.write_text("\n".join(lines[:4]) + "\n")
    assert _problems(parties.a) == [
        "entry #4 cut off (the log was truncated)",
        "entry #5 cut off (the log was truncated)",
    ]
    # Cut together with its own heads: only the heads the other party holds tell.
    heads = parties.a.path / "log" / "heads.jsonl"
    heads.write_text("\n".join(heads.read_text().splitlines()[:4]) + "\n")
    assert _problems(parties.a) == []
    assert _problems(parties.a, held_by_peer[-1:]) == [
        "entry #4 cut off (the log was truncated)",
        "entry #5 cut off (the log was truncated)",
    ]
    peer_file = parties.a.path.parent / "peer-heads.jsonl"
    peer_file.write_text(json.dumps(held_by_peer[-1]) + "\n")
    res = runner.invoke(
        app, ["log", "verify", "--home", str(parties.a.path), "--heads", str(peer_file)]
    )
    assert res.exit_code == 22 and "entry #5 cut off" in res.output


def test_a_rewritten_log_with_resigned_heads_differs_from_the_peers_copy(parties: Parties) -> None:
    _filled(parties.a, 3)
    held = json.loads((parties.a.path / "log" / "heads.jsonl").read_text().splitlines()[-1])
    # The owner rewrites history from scratch with its own key: self-consistent...
    for name in ("entries.jsonl", "heads.jsonl"):
        (parties.a.path / "log" / name).unlink()
    for i in range(3):
        parties.a.log.append("sent", package=f"{i:032x}", convenzione="c", peer="B", rows=i + 1)
    assert _problems(parties.a) == []
    # ...but not with the head the other party holds.
    assert _problems(parties.a, [held]) == [
        "the head of size 3 held by the other party differs from this log's own: "
        "the log and its heads were rewritten"
    ]


def test_a_forged_head_is_reported(parties: Parties) -> None:
    _filled(parties.a, 2)
    heads = parties.a.path / "log" / "heads.jsonl"
    lines = heads.read_text().splitlines()
    lines[1] = lines[1].replace('"size":2', '"size":3')
    heads.write_text("\n".join(lines) + "\n")
    assert _problems(parties.a) == ["heads.jsonl line 2: a tree head whose signature fails"]


@pytest.mark.parametrize("n", [1, 5])
def test_inclusion_and_consistency_proofs_of_the_log(parties: Parties, n: int) -> None:
    _filled(parties.a, n)
    head = parties.a.log.head()
    assert head is not None
    p = parties.a.log.inclusion_proof(n - 1)
    leaf = bytes.fromhex(head["leaf"])
    assert merkle.verify_inclusion(
        n - 1, n, leaf, [bytes.fromhex(x) for x in p["proof"]], bytes.fromhex(head["root"])
    )
