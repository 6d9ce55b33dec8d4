"""docs/canvas.md's install steps are those of the pinned Canvas CLI (0.203.1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from canvas_cli.apps.auth.utils import CONFIG_PATH

DOCS = Path(__file__).resolve().parents[3] / "docs" / "canvas.md"
CANVAS = Path(sys.executable).with_name("canvas")


def test_credentials_go_where_the_docs_say() -> None:
    assert Path.home() / ".canvas" / "credentials.ini" == CONFIG_PATH
    text = DOCS.read_text()
    assert "`~/.canvas/credentials.ini`" in text
    assert "client_id=<client id>\nclient_secret=<client secret>" in text.replace("   ", "")


def test_canvas_install_has_the_options_the_docs_use() -> None:
    answer = subprocess.run(
        [str(CANVAS), "install", "--help"], capture_output=True, text=True, check=True
    )
    for option in ("--secret", "--variable", "--host"):
        assert option in answer.stdout
        assert option in DOCS.read_text()
    assert "auth add-api-client" not in DOCS.read_text()
