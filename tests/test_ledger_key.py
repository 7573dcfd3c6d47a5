"""The ledger's token key: made once, private, shared by everything that opens the ledger."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from probe.correlation import find_tokens
from probe.errors import ProbeError
from probe.ledger import Ledger, key_path


def test_the_key_is_made_on_first_use_beside_the_ledger_with_mode_0600(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db) as ledger:
        assert not key_path(db).exists()  # opening alone (a read-only command) makes nothing
        token = ledger.token_key.token("0123456789", 3)
    assert stat.S_IMODE(key_path(db).stat().st_mode) == 0o600
    with Ledger(db) as reopened:
        (found,) = find_tokens(token)
        assert reopened.token_key.verify(found)


def test_two_ledgers_have_keys_that_do_not_verify_each_others_tokens(tmp_path: Path) -> None:
    with Ledger(tmp_path / "a.sqlite3") as a, Ledger(tmp_path / "b.sqlite3") as b:
        (found,) = find_tokens(a.token_key.token("0123456789", 1))
        assert a.token_key.verify(found) and not b.token_key.verify(found)


def test_a_sink_and_a_burst_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    tokens: list[str] = []

    def first_use() -> None:
        with Ledger(db) as ledger:
            tokens.append(ledger.token_key.token("0123456789", 1))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(tokens) == 8 and len(set(tokens)) == 1


def test_a_link_planted_as_the_key_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    (tmp_path / "elsewhere").write_text("00" * 32)
    key_path(db).symlink_to(tmp_path / "elsewhere")
    with Ledger(db) as ledger, pytest.raises(ProbeError, match="symbolic link"):
        ledger.token_key  # noqa: B018
