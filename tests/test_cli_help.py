"""`workbench train --help` in sections (issue 35, item 10): every option sits under a titled group."""

from __future__ import annotations

import contextlib
import io

import pytest

from workbench.cli.main import TRAIN_GROUPS, main


def _train_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["train", "--help"])
    return out.getvalue()


def test_train_help_is_grouped_and_every_option_has_a_section():
    text = _train_help()
    for title in TRAIN_GROUPS:
        assert f"\n{title}:\n" in text
    ungrouped = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[0] for line in ungrouped.splitlines() if line.startswith("  -")] == ["-h,"]
    assert "--label-columns" in text.split("\ndata:\n", 1)[1].split("\ntagging:\n", 1)[0]
