"""``stepwise lint``: every invalid case is rejected naming its field; valid examples pass;
the command's output format and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.api.validation import is_stepwise, validate_document
from controller.cli import main
from tests.support.agreement_cases import AGREEMENT, Agreement
from tests.support.invalid_cases import CASES, CLUSTER_CASES, Case
from tests.support.manifests import analysis_template, rollout

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
    """The Stepwise objects of the examples shipped in deploy/examples have no problems
    (an example may carry the Services it needs too)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if is_stepwise(d)]
    assert docs
    for doc in docs:
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
    objects = sum(
        len([d for d in yaml.safe_load_all(p.read_text()) if is_stepwise(d)]) for p in EXAMPLES
    )
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


@pytest.mark.parametrize("case", AGREEMENT, ids=lambda c: c.id)
def test_lint_gives_the_servers_verdict(case: Agreement) -> None:
    """No coercion, nulls dropped, names checked: lint's verdict is the server's (the
    integration test checks the table against the real server)."""
    assert (validate_document(case.doc) == []) is case.valid


def test_a_file_without_a_stepwise_object_is_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An Argo Rollouts manifest whose apiVersion was not changed is not "valid": exit 1,
    naming what to change."""
    argo = tmp_path / "argo.yaml"
    doc = rollout("app")
    doc["apiVersion"] = "argoproj.io/v1alpha1"
    argo.write_text(yaml.safe_dump(doc))
    assert main(["lint", str(argo)]) == 1
    err = capsys.readouterr().err
    assert f"{argo}: no Stepwise object" in err
    assert "argoproj.io/v1alpha1 objects: change their apiVersion to stepwise.dev/v1alpha1" in err


def test_a_file_that_is_not_utf8_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are not UTF-8: one line and exit 1, no traceback."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["lint", str(latin)]) == 1
    err = capsys.readouterr().err
    assert f"{latin}: not UTF-8 text (byte 9)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("field", "condition"),
    [
        pytest.param("successCondition", "result >== 0.9 )", id="broken-success"),
        pytest.param("failureCondition", "__import__('os')", id="outside-the-language"),
    ],
)
def test_conditions_are_parsed_by_the_runtimes_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, condition: str
) -> None:
    """A condition the runtime could not parse is a lint problem naming the field (the
    server cannot see it; the reconciler treats the template as invalid the same way)."""
    doc = analysis_template()
    doc["spec"]["metrics"][0][field] = condition
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["lint", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"AnalysisTemplate/success-rate: spec.metrics[0].{field}: " in out


def test_an_unknown_field_is_named_even_when_its_value_is_null() -> None:
    """``creationTimestamp: null`` in a pod template's metadata (objects serialised from
    Go carry it) is an unknown field to the API server's strict decoding, null or not;
    a null on a known field is dropped, as the server drops it."""
    doc = rollout("app")
    doc["spec"]["template"]["metadata"]["creationTimestamp"] = None
    doc["spec"]["strategy"]["canary"]["analysis"] = None
    problems = [(p.field, p.reason) for p in validate_document(doc)]
    assert problems == [("spec.template.metadata.creationTimestamp", "unknown field")]
