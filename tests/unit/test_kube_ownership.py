"""Which existing ReplicaSets a Rollout may adopt: unowned or stale-owned ones carrying its
labels, never one another live controller owns."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes import client

from controller.adapters.kube import REVISION_LABEL, ROLLOUT_LABEL, adoptable

ROLLOUT: dict[str, Any] = {"metadata": {"name": "app", "namespace": "shop", "uid": "uid-now"}}
LABELS = {ROLLOUT_LABEL: "app", REVISION_LABEL: "abc"}


def ref(
    kind: str = "Rollout",
    name: str = "app",
    uid: str = "uid-now",
    api_version: str = "stepwise.dev/v1alpha1",
    controller: bool | None = True,
) -> client.V1OwnerReference:
    """An owner reference."""
    return client.V1OwnerReference(
        api_version=api_version, kind=kind, name=name, uid=uid, controller=controller
    )


def meta(
    refs: list[client.V1OwnerReference] | None = None,
    labels: dict[str, str] | None = None,
    deleting: bool = False,
) -> client.V1ObjectMeta:
    """A ReplicaSet's metadata."""
    return client.V1ObjectMeta(
        name="app-abc",
        namespace="shop",
        labels=LABELS if labels is None else labels,
        owner_references=refs,
        deletion_timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) if deleting else None,
    )


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(meta(), True, id="no-owner"),
        pytest.param(meta([]), True, id="empty-owner-list"),
        pytest.param(meta([ref(uid="uid-before")]), True, id="stale-same-name-other-uid"),
        pytest.param(
            meta([ref(kind="ConfigMap", name="x", uid="c", controller=None)]),
            True,
            id="only-non-controller-refs",
        ),
        pytest.param(meta([ref()]), False, id="already-owned"),
        pytest.param(meta([ref(kind="Deployment", uid="d")]), False, id="live-other-controller"),
        pytest.param(meta([ref(name="other", uid="o")]), False, id="another-rollout"),
        pytest.param(
            meta([ref(uid="old", api_version="argoproj.io/v1alpha1")]),
            False,
            id="rollout-of-another-group",
        ),
        pytest.param(
            meta([ref(uid="uid-before"), ref(kind="Deployment", uid="d")]),
            False,
            id="stale-and-live-controllers",
        ),
        pytest.param(meta(labels={REVISION_LABEL: "abc"}), False, id="no-rollout-label"),
        pytest.param(
            meta(labels={ROLLOUT_LABEL: "other", REVISION_LABEL: "abc"}), False, id="other-label"
        ),
        pytest.param(meta(labels={ROLLOUT_LABEL: "app"}), False, id="no-revision-label"),
        pytest.param(meta(deleting=True), False, id="being-deleted"),
        pytest.param(None, False, id="no-metadata"),
    ],
)
def test_adoptable(obj: client.V1ObjectMeta | None, expected: bool) -> None:
    """A labelled ReplicaSet without a live controller owner is adoptable; nothing else."""
    assert adoptable(obj, ROLLOUT) is expected
