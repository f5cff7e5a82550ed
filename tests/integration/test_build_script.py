"""hack/cluster/build.sh says what is missing and how to fix it, instead of failing
obscurely: no Go toolchain, or prebuilt binaries that are incomplete."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BUILD = Path(__file__).resolve().parents[2] / "hack" / "cluster" / "build.sh"


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, env=env, check=False, timeout=60
    )


def test_missing_go_says_how_to_fix_it(tmp_path: Path) -> None:
    """Without Go on PATH the build stops at once, naming Go and the alternatives."""
    result = run({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STEPWISE_CACHE": str(tmp_path)})
    assert result.returncode == 1
    assert "no Go toolchain on PATH" in result.stderr
    assert "STEPWISE_BIN_DIR" in result.stderr


def test_incomplete_prebuilt_binaries_are_named(tmp_path: Path) -> None:
    """STEPWISE_BIN_DIR without kwok: the error names the missing binary."""
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    result = run({**os.environ, "STEPWISE_BIN_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert f"STEPWISE_BIN_DIR={tmp_path} has no executable 'kwok'" in result.stderr


def test_complete_prebuilt_binaries_are_used_as_they_are(tmp_path: Path) -> None:
    """A complete STEPWISE_BIN_DIR is printed back and nothing is built."""
    for name in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "kwok",
    ):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    result = run({**os.environ, "STEPWISE_BIN_DIR": str(tmp_path)})
    assert result.returncode == 0
    assert result.stdout.strip() == str(tmp_path)
    assert result.stderr == ""


def test_a_failed_build_shows_its_output_and_what_to_check(tmp_path: Path) -> None:
    """A `go build` that fails stops the build with Go's own last lines, the package that
    failed and what to check; no partial binary is left to look finished."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = env ]; then echo go1.26.0; exit 0; fi\n'
        "echo 'go: downloading go.etcd.io/etcd/server/v3 v3.6.16'\n"
        "echo 'dial tcp: lookup proxy.golang.org: no such host' >&2\n"
        "exit 1\n"
    )
    go.chmod(0o755)
    cache = tmp_path / "cache"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "STEPWISE_CACHE": str(cache)}
    result = run(env)
    assert result.returncode == 1
    assert "no such host" in result.stderr
    assert "go build of go.etcd.io/etcd/server/v3 failed" in result.stderr
    assert "GOPROXY" in result.stderr
    assert [p.name for p in cache.rglob("*") if p.is_file()] == []
