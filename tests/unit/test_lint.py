"""``stepwise lint``: every invalid case is rejected naming its field; valid examples pass;
the command's output format and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.api.validation import validate_document
from controller.cli import main
from tests.support.invalid_cases import CASES, CLUSTER_CASES, Case

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLES = sorted([*(DEPLOY / "examples").glob("*.yaml"), *(DEPLOY / "templates").glob("*.yaml")])


@pytest.mark.parametrize("case", CASES + CLUSTER_CASES, ids=lambda c: c.id)
def test_lint_rejects_naming_the_field(case: Case) -> None:
    """Each invalid document gets at least one problem whose field is the expected one."""
    problems = validate_document(case.doc)
    assert problems, "expected the document to be rejected"
    fields = [p.field for p in problems]
    assert any(f.startswith(case.field) for f in fields), fields


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    """The examples shipped in deploy/examples have no problems."""
    for doc in yaml.safe_load_all(path.read_text()):
        assert validate_document(doc) == []


def test_lint_command_prints_file_kind_name_field_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI prints `file: Kind/name: field: reason` and exits 1 on a bad file."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([CASES[0].doc, {"apiVersion": "v1", "kind": "Service"}]))
    assert main(["lint", str(bad)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"{bad}: Rollout/bad: spec.strategy.canary.steps[0].setWeight: "
        "Input should be less than or equal to 100"
    ]


def test_lint_command_exits_0_for_valid_files(capsys: pytest.CaptureFixture[str]) -> None:
    """All examples together: exit 0 and a summary on stderr."""
    assert main(["lint", *map(str, EXAMPLES)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    objects = sum(len(list(yaml.safe_load_all(p.read_text()))) for p in EXAMPLES)
    assert f"{objects} Stepwise object(s) checked: valid" in captured.err


def test_lint_command_reports_unreadable_and_malformed_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file and broken YAML are one line each, no traceback, exit 1."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    assert main(["lint", str(tmp_path / "missing.yaml"), str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory" in err
    assert f"{broken}: not valid YAML:" in err
    assert "Traceback" not in err
