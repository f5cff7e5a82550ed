"""The Dockerfile, read statically (Docker cannot run here, so the image is not built in
tests): a pinned slim Python 3.11 base, the uv lock honoured, a non-root user, and
``stepwise run`` as the entrypoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every instruction, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out: list[tuple[str, str]] = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args() -> dict[str, str]:
    """Default values of the ARG instructions."""
    found: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            found[name] = value
    return found


def of(word: str) -> list[str]:
    """The arguments of each ``word`` instruction, in order."""
    return [rest for w, rest in instructions() if w == word]


def test_base_image_is_a_pinned_slim_python_311() -> None:
    """Every stage starts from python:3.11.<patch>-slim-<debian release>, never a floating tag."""
    image = args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", image)
    stages = of("FROM")
    assert len(stages) == 2
    assert all(s.split()[0] == "${PYTHON_IMAGE}" for s in stages)


def test_uv_is_the_makefiles_version_and_the_lock_is_frozen() -> None:
    """uv is the release the Makefile pins, and every sync installs the lock as it is,
    without the dev dependencies."""
    makefile = (REPO / "Makefile").read_text()
    pinned = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert pinned is not None
    assert args()["UV_VERSION"] == pinned.group(1)
    syncs = [r for r in of("RUN") if "uv sync" in r]
    assert len(syncs) == 2
    for sync in syncs:
        assert "--frozen" in sync.split()
        assert "--no-dev" in sync.split()
    assert any("uv.lock" in c for c in of("COPY"))


def test_runs_as_a_numeric_non_root_user() -> None:
    """The final image runs as uid 10001 (numeric, so runAsNonRoot can verify it), the
    uid the chart's securityContext names."""
    users = of("USER")
    assert users == ["10001:10001"]
    position = [w for w, _ in instructions()].index("USER")
    last_from = max(i for i, (w, _) in enumerate(instructions()) if w == "FROM")
    assert position > last_from
    values = (REPO / "charts" / "stepwise" / "values.yaml").read_text()
    assert "runAsUser: 10001" in values


def test_entrypoint_is_stepwise_run() -> None:
    """The entrypoint, in exec form, is the installed ``stepwise run``; flags come as args."""
    (entrypoint,) = of("ENTRYPOINT")
    argv = json.loads(entrypoint)
    assert Path(argv[0]).name == "stepwise"
    assert argv[1:] == ["run"]
    assert of("CMD") == []
