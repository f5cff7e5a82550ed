"""``stepwise lint`` run on a file as a user runs it, and the API server's verdict on the
same documents, for the tests that hold the two side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.cli import main
from tests.integration.test_lint_server_agreement import server_accepts


@dataclass(frozen=True)
class Linter:
    """Runs ``stepwise lint`` on files written in the test's directory."""

    tmp_path: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, name: str, text: str) -> tuple[int, str, str]:
        """Write ``text`` to the file ``name`` and lint it: (exit code, stdout, stderr)."""
        path = self.tmp_path / name
        path.write_text(text)
        code = main(["lint", str(path)])
        out, err = self.capsys.readouterr()
        return code, out, err


@dataclass(frozen=True)
class Server:
    """The API server's strict dry-run create, in the test's namespace."""

    api_client: client.ApiClient
    namespace: str

    def accepts(self, doc: dict[str, Any]) -> bool:
        return server_accepts(self.api_client, self.namespace, doc)
