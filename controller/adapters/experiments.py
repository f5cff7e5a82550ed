"""Kubernetes writes for the ``experiment`` step: its ReplicaSets and their Services.

What to run was decided by :mod:`controller.core.experiment`; this module builds the
objects and writes them, one call each under the shared retry policy (through
:class:`~controller.adapters.kube.KubeAdapter`, whose fence stops writes on a lost lease).

Labels: an experiment ReplicaSet and its pods carry ``stepwise.dev/rollout`` (so the
Rollout's informer sees them and wakes the Rollout), ``stepwise.dev/experiment`` (the
template's name: the reconciler keeps them out of the Rollout's revisions) and their own
``stepwise.dev/revision`` (the experiment's hash, never a revision of the Rollout, so
the stable and canary Services never select them).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Final

import structlog
from kubernetes import client

from controller.adapters.kube import (
    FIELD_MANAGER,
    REVISION_LABEL,
    ROLLOUT_LABEL,
    KubeAdapter,
    owned_by,
    owner_reference,
    replica_set_name,
)
from controller.core.model import DeleteExperimentSet, ExperimentSetState, ScaleExperimentSet
from controller.errors import ConflictError, NotFoundError

EXPERIMENT_LABEL: Final = "stepwise.dev/experiment"
"""On an experiment's ReplicaSets, pods and Services: the experiment template's name."""
SERVICE_ANNOTATION: Final = "stepwise.dev/experiment-service"
"""On an experiment ReplicaSet: the Service created for its pods."""

log = structlog.get_logger()


def is_experiment_set(rs: client.V1ReplicaSet) -> bool:
    """Whether a ReplicaSet belongs to an experiment step (not to a revision)."""
    return EXPERIMENT_LABEL in ((rs.metadata.labels if rs.metadata else None) or {})


def experiment_set_state(rs: client.V1ReplicaSet, uid: str) -> ExperimentSetState | None:
    """What core needs of an experiment ReplicaSet the Rollout ``uid`` owns (None for
    one it does not own: someone else's is never touched)."""
    meta = rs.metadata
    if meta is None or not owned_by(meta, uid):
        return None
    labels = meta.labels or {}
    return ExperimentSetState(
        name=meta.name or "",
        template=labels.get(EXPERIMENT_LABEL, ""),
        pod_hash=labels.get(REVISION_LABEL, ""),
        replicas=rs.spec.replicas if rs.spec and rs.spec.replicas is not None else 0,
        ready=rs.status.ready_replicas if rs.status and rs.status.ready_replicas else 0,
        service=(meta.annotations or {}).get(SERVICE_ANNOTATION),
    )


def build_experiment_set(
    rollout: dict[str, Any], source: dict[str, Any], action: ScaleExperimentSet
) -> dict[str, Any]:
    """The ReplicaSet of an experiment template: the ``source`` pod template with the
    template's labels and annotations added and the experiment's own labels set, selected
    by the template's selector (default: the Rollout's) plus its revision label."""
    meta = rollout["metadata"]
    template = copy.deepcopy(source)
    pod_meta = template.setdefault("metadata", {})
    own = {
        ROLLOUT_LABEL: meta["name"],
        EXPERIMENT_LABEL: action.template,
        REVISION_LABEL: action.pod_hash,
    }
    labels = {**(pod_meta.get("labels") or {}), **dict(action.labels), **own}
    pod_meta["labels"] = labels
    if action.annotations:
        pod_meta["annotations"] = {
            **(pod_meta.get("annotations") or {}),
            **dict(action.annotations),
        }
    pod_meta.pop("creationTimestamp", None)
    selector = (
        action.selector.wire()
        if action.selector is not None
        else copy.deepcopy(rollout["spec"]["selector"])
    )
    selector.setdefault("matchLabels", {})[REVISION_LABEL] = action.pod_hash
    annotations = {SERVICE_ANNOTATION: action.service} if action.service else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": action.name,
            "namespace": meta["namespace"],
            "labels": own,
            "annotations": annotations,
            "ownerReferences": [owner_reference(rollout)],
        },
        "spec": {"replicas": action.replicas, "selector": selector, "template": template},
    }


def build_service(
    rollout: dict[str, Any], replica_set: dict[str, Any], action: ScaleExperimentSet
) -> dict[str, Any]:
    """A Service selecting exactly the template's pods, with the container ports of its
    pod template (headless when the pods declare none)."""
    assert action.service is not None
    ports: list[dict[str, Any]] = []
    containers = replica_set["spec"]["template"].get("spec", {}).get("containers") or []
    for container in containers:
        for port in container.get("ports") or []:
            number = port["containerPort"]
            ports.append(
                {
                    "name": port.get("name") or f"port-{number}",
                    "port": number,
                    "targetPort": number,
                    "protocol": port.get("protocol") or "TCP",
                }
            )
    spec: dict[str, Any] = {
        "selector": {EXPERIMENT_LABEL: action.template, REVISION_LABEL: action.pod_hash}
    }
    if ports:
        spec["ports"] = ports
    else:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": action.service,
            "namespace": rollout["metadata"]["namespace"],
            "labels": {EXPERIMENT_LABEL: action.template},
            "ownerReferences": [owner_reference(rollout)],
        },
        "spec": spec,
    }


class ExperimentSets:
    """Creates, scales and deletes the ReplicaSets (and Services) of experiment steps."""

    def __init__(self, kube: KubeAdapter) -> None:
        self.kube = kube
        self._serializer = client.ApiClient()

    def source_template(
        self, rollout: dict[str, Any], action: ScaleExperimentSet
    ) -> dict[str, Any]:
        """The pod template a template copies: the Rollout's (canary) or the stable
        revision's ReplicaSet's (stable); NotFoundError when that ReplicaSet is gone."""
        if action.spec_ref == "canary":
            return copy.deepcopy(rollout["spec"]["template"])
        meta = rollout["metadata"]
        name = replica_set_name(meta["name"], action.source)
        rs = self.kube._write(  # a read, but under the same fence and retry policy
            lambda: self.kube.apps.read_namespaced_replica_set(name, meta["namespace"])
        )
        template: dict[str, Any] = self._serializer.sanitize_for_serialization(  # type: ignore[no-untyped-call]
            rs.spec.template
        )
        labels = template.get("metadata", {}).get("labels") or {}
        labels.pop(REVISION_LABEL, None)
        return template

    def scale(self, rollout: dict[str, Any], action: ScaleExperimentSet) -> None:
        """Create the template's ReplicaSet (and its Service) or set its replica count."""
        ns = rollout["metadata"]["namespace"]
        body = {"spec": {"replicas": action.replicas}}
        apps = self.kube.apps
        try:
            self.kube._write(
                lambda: apps.patch_namespaced_replica_set(
                    action.name, ns, body, field_manager=FIELD_MANAGER
                )
            )
            return
        except NotFoundError:
            pass
        rs = build_experiment_set(rollout, self.source_template(rollout, action), action)
        if action.service:
            self._create_service(rollout, rs, action)
        try:
            self.kube._write(
                lambda: apps.create_namespaced_replica_set(
                    ns,
                    rs,  # type: ignore[arg-type]  # the client sends a plain dict as it is
                    field_manager=FIELD_MANAGER,
                )
            )
            log.info(
                "experiment replicaset created",
                replicaset=action.name,
                template=action.template,
                source=action.source,
                replicas=action.replicas,
            )
        except ConflictError:
            self.kube._write(
                lambda: apps.patch_namespaced_replica_set(
                    action.name, ns, body, field_manager=FIELD_MANAGER
                )
            )

    def _create_service(
        self, rollout: dict[str, Any], rs: dict[str, Any], action: ScaleExperimentSet
    ) -> None:
        ns = rollout["metadata"]["namespace"]
        service = build_service(rollout, rs, action)
        try:
            self.kube._write(
                lambda: self.kube.core.create_namespaced_service(
                    ns,
                    service,  # type: ignore[arg-type]  # a plain dict, sent as it is
                    field_manager=FIELD_MANAGER,
                )
            )
            log.info("experiment service created", service=action.service, template=action.template)
        except ConflictError:
            pass  # created by an earlier pass whose ReplicaSet write failed

    def delete(self, namespace: str, action: DeleteExperimentSet) -> None:
        """Delete an experiment ReplicaSet (its pods go with it) and its Service."""
        apps, core = self.kube.apps, self.kube.core
        service = action.service
        if service:
            with contextlib.suppress(NotFoundError):
                self.kube._write(lambda: core.delete_namespaced_service(service, namespace))
        try:
            self.kube._write(
                lambda: apps.delete_namespaced_replica_set(
                    action.name, namespace, propagation_policy="Background"
                )
            )
            log.info("experiment replicaset deleted", replicaset=action.name)
        except NotFoundError:
            return
