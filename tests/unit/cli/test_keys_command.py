"""`capsearch keys create|list|revoke` against an instance's database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capsearch.cli import main


def test_create_list_revoke_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["keys", "create", "--name", "ci", "--scope", "search", "--scope", "write",
                 "--json", *data]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith("csk_") and created["scopes"] == ["search", "write"]

    assert main(["keys", "list", "--json", *data]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert "key" not in listed[0]

    assert main(["keys", "revoke", created["prefix"], *data]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--json", *data]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_create_prints_the_key_alone_on_stdout(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("csk_") and len(out.out.split()) == 1
    assert "shown only once" in out.err


def test_revoking_an_unknown_key_fails_with_one_line(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "revoke", "csk_missing0", "--data-dir", str(tmp_path)]) == 1
    assert "no API key" in capsys.readouterr().err
