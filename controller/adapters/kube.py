"""Kubernetes writes for a Rollout: ReplicaSets, Service selectors, status, events.

Thin on purpose: every method does one API call (under the shared retry policy) and
raises only :mod:`controller.errors`. What to write was decided by ``core.plan``; the
one decision made here is the ReplicaSet's shape, which follows from the Rollout.

Labels: every ReplicaSet and pod of a Rollout carries ``stepwise.dev/rollout`` (the
Rollout's name) and ``stepwise.dev/revision`` (the pod-template hash). A Service is
pinned to a revision by adding ``stepwise.dev/revision`` to its selector.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
from collections.abc import Callable
from typing import Any, Final, TypeVar

import structlog
from kubernetes import client

from controller.adapters.retry import call_api
from controller.api.rollout import GROUP, VERSION, RolloutStatus
from controller.api.validation import without_nulls
from controller.core.model import Event, ReplicaSetState, SetRoleMetadata
from controller.core.workload import (
    REPLICAS_BEFORE_ANNOTATION,
    SCALE_DOWN_ANNOTATION,
    SCALED_BY_ANNOTATION,
    Deployment,
    ScaleDeployment,
)
from controller.errors import ApiError, ConflictError, InvalidError, NotFoundError

ROLLOUT_LABEL = "stepwise.dev/rollout"
REVISION_LABEL = "stepwise.dev/revision"
ROLE_ANNOTATION: Final = "stepwise.dev/role"
"""On a ReplicaSet: the blue-green role metadata its pods carry (``<role>:<digest>``)."""
FINALIZER = "stepwise.dev/cleanup"
FIELD_MANAGER = "stepwise-controller"
PLURAL = "rollouts"

log = structlog.get_logger()
T = TypeVar("T")
Fence = Callable[[], None]

# -- ReplicaSets ----------------------------------------------------------------------


def _no_fence() -> None:
    return None


def replica_set_name(rollout: str, revision: str) -> str:
    """The ReplicaSet name of a revision (``checkout-7f9c2kd``)."""
    return f"{rollout}-{revision}"[:253]


def build_replica_set(rollout: dict[str, Any], revision: str, replicas: int) -> dict[str, Any]:
    """The ReplicaSet for ``revision`` of ``rollout`` (its template and selector, with the
    revision label added, owned by the Rollout)."""
    meta = rollout["metadata"]
    spec = rollout["spec"]
    template = copy.deepcopy(spec["template"])
    labels = {**(template.get("metadata", {}).get("labels") or {}), REVISION_LABEL: revision}
    labels[ROLLOUT_LABEL] = meta["name"]
    template.setdefault("metadata", {})["labels"] = labels
    selector = copy.deepcopy(spec["selector"])
    selector.setdefault("matchLabels", {})[REVISION_LABEL] = revision
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": replica_set_name(meta["name"], revision),
            "namespace": meta["namespace"],
            "labels": {**labels},
            "ownerReferences": [owner_reference(rollout)],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    }


def owner_reference(rollout: dict[str, Any]) -> dict[str, Any]:
    """A controller owner reference to the Rollout (garbage collection removes its
    ReplicaSets with it)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "name": rollout["metadata"]["name"],
        "uid": rollout["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def replica_set_state(rs: client.V1ReplicaSet) -> ReplicaSetState | None:
    """What core needs of a ReplicaSet (None if it has no revision label)."""
    meta = rs.metadata
    if meta is None or not meta.labels or REVISION_LABEL not in meta.labels:
        return None
    spec_replicas = rs.spec.replicas if rs.spec and rs.spec.replicas is not None else 0
    ready = rs.status.ready_replicas if rs.status and rs.status.ready_replicas else 0
    return ReplicaSetState(
        name=meta.name or "",
        revision=meta.labels[REVISION_LABEL],
        replicas=spec_replicas,
        ready=ready,
        created=meta.creation_timestamp,
        role=(meta.annotations or {}).get(ROLE_ANNOTATION),
    )


def owned_by(obj_meta: client.V1ObjectMeta | None, uid: str) -> bool:
    """Whether an object's controller owner reference is the Rollout with ``uid``."""
    refs = obj_meta.owner_references if obj_meta else None
    return any(ref.uid == uid and ref.controller for ref in refs or [])


def _stale_rollout_ref(ref: client.V1OwnerReference, rollout: dict[str, Any]) -> bool:
    """A controller reference to an earlier Rollout of this name: same kind, group and
    name, another uid. Two Rollouts of one name cannot exist in a namespace at once, so
    that one is gone (the garbage collector has not caught up yet)."""
    meta = rollout["metadata"]
    return bool(
        ref.controller
        and ref.kind == "Rollout"
        and (ref.api_version or "").split("/")[0] == GROUP
        and ref.name == meta["name"]
        and ref.uid != meta["uid"]
    )


def adoptable(obj_meta: client.V1ObjectMeta | None, rollout: dict[str, Any]) -> bool:
    """Whether a ReplicaSet may be adopted by ``rollout``: it carries the Rollout's
    label and a revision, it is not being deleted, it is not owned by this Rollout
    already, and its controller reference is missing or stale (an earlier Rollout of
    the same name). A ReplicaSet another live controller owns is never taken."""
    if obj_meta is None or obj_meta.deletion_timestamp is not None:
        return False
    labels = obj_meta.labels or {}
    if labels.get(ROLLOUT_LABEL) != rollout["metadata"]["name"] or REVISION_LABEL not in labels:
        return False
    if owned_by(obj_meta, rollout["metadata"]["uid"]):
        return False
    controllers = [ref for ref in obj_meta.owner_references or [] if ref.controller]
    return all(_stale_rollout_ref(ref, rollout) for ref in controllers)


def deployment_state(dep: client.V1Deployment) -> Deployment | None:
    """What :mod:`controller.core.workload` needs of a Deployment (wire form); None for
    one without a name or spec."""
    meta, spec = dep.metadata, dep.spec
    if meta is None or not meta.name or spec is None:
        return None
    template = spec.template.to_dict(serialize=True) if spec.template is not None else {}
    selector = spec.selector.to_dict(serialize=True) if spec.selector is not None else {}
    return Deployment(
        name=meta.name,
        namespace=meta.namespace or "",
        replicas=spec.replicas if spec.replicas is not None else 1,
        template=without_nulls(template),
        selector=without_nulls(selector),
        annotations=dict(meta.annotations or {}),
        resource_version=meta.resource_version,
    )


SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
"""The label an EndpointSlice names its Service by."""


class KubeAdapter:
    """The Kubernetes writes of one controller process. ``fence`` is called before every
    write and raises :class:`controller.errors.LeadershipLostError` on a lost lease."""

    def __init__(self, api_client: client.ApiClient, *, fence: Fence = _no_fence) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self._fence = fence

    def _write(self, fn: Callable[[], T]) -> T:
        """One write: the fence, then the call under the retry policy, errors translated."""
        self._fence()
        return call_api(fn)

    # -- ReplicaSets ----------------------------------------------------------------

    def scale_replica_set(self, rollout: dict[str, Any], revision: str, replicas: int) -> None:
        """Create the revision's ReplicaSet with ``replicas`` pods, or set its count."""
        ns = rollout["metadata"]["namespace"]
        name = replica_set_name(rollout["metadata"]["name"], revision)
        body = {"spec": {"replicas": replicas}}
        try:
            self._write(
                lambda: self.apps.patch_namespaced_replica_set(
                    name, ns, body, field_manager=FIELD_MANAGER
                ),
            )
            return
        except NotFoundError:
            pass
        rs = build_replica_set(rollout, revision, replicas)
        try:
            self._write(
                lambda: self.apps.create_namespaced_replica_set(
                    ns,
                    rs,  # type: ignore[arg-type]  # the client sends a plain dict as it is
                    field_manager=FIELD_MANAGER,
                ),
            )
            log.info("replicaset created", replicaset=name, revision=revision, replicas=replicas)
        except ConflictError:
            # Created meanwhile (another pass, or an old controller): scale that one.
            self._write(
                lambda: self.apps.patch_namespaced_replica_set(
                    name, ns, body, field_manager=FIELD_MANAGER
                ),
            )

    def adopt_replica_set(self, rollout: dict[str, Any], rs: client.V1ReplicaSet) -> bool:
        """Make ``rollout`` the controller owner of a ReplicaSet that is
        :func:`adoptable`: an owner reference that was missing is added, a stale one (an
        earlier Rollout of the same name) replaced; other owners' references are kept.
        Returns False, writing nothing, for a ReplicaSet that is not adoptable. Guarded by
        the ReplicaSet's resourceVersion: if it changed since it was read,
        :class:`ConflictError` (the next pass reads it again)."""
        meta = rs.metadata
        if meta is None or not adoptable(meta, rollout):
            log.info(
                "replicaset not adoptable; left alone",
                replicaset=meta.name if meta is not None else None,
            )
            return False
        assert meta.name
        assert meta.namespace
        name, namespace = meta.name, meta.namespace
        kept = [
            {k: v for k, v in ref.to_dict(serialize=True).items() if v is not None}
            for ref in meta.owner_references or []
            if not _stale_rollout_ref(ref, rollout)
        ]
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta.resource_version},
            {
                "op": "add",  # replaces the member when it exists
                "path": "/metadata/ownerReferences",
                "value": [*kept, owner_reference(rollout)],
            },
        ]
        try:
            self._write(
                lambda: self.apps.patch_namespaced_replica_set(
                    name,
                    namespace,
                    ops,
                    field_manager=FIELD_MANAGER,
                    _content_type="application/json-patch+json",
                ),
            )
        except InvalidError as err:
            # A failed JSON-patch test is a stale view, like a 409.
            raise ConflictError(str(err)) from err
        stale = [ref.uid for ref in meta.owner_references or [] if ref.controller]
        log.info("replicaset adopted", replicaset=name, replaced_owner=stale or None)
        return True

    def delete_replica_set(self, namespace: str, name: str) -> None:
        """Delete an old ReplicaSet (its pods go with it)."""
        try:
            self._write(
                lambda: self.apps.delete_namespaced_replica_set(
                    name, namespace, propagation_policy="Background"
                ),
            )
        except NotFoundError:
            return

    # -- Services -------------------------------------------------------------------

    def pin_service(self, namespace: str, service: str, revision: str) -> None:
        """Add (or change) the revision label in a Service's selector."""
        patch = {"spec": {"selector": {REVISION_LABEL: revision}}}
        self._write(
            lambda: self.core.patch_namespaced_service(
                service, namespace, patch, field_manager=FIELD_MANAGER
            ),
        )

    def set_role_metadata(self, rollout: dict[str, Any], action: SetRoleMetadata) -> None:
        """A blue-green role's labels and annotations on a revision's ReplicaSet template
        (for pods to come) and on each of its pods, the other role's removed; the
        ReplicaSet's ``stepwise.dev/role`` annotation is written last, so a pass that
        fails half-way is done again."""
        ns, name = rollout["metadata"]["namespace"], rollout["metadata"]["name"]
        rs_name = replica_set_name(name, action.revision)
        meta: dict[str, Any] = {
            "labels": {**dict.fromkeys(action.drop_labels), **dict(action.labels)},
            "annotations": {**dict.fromkeys(action.drop_annotations), **dict(action.annotations)},
        }
        template = {"spec": {"template": {"metadata": meta}}}
        self._write(
            lambda: self.apps.patch_namespaced_replica_set(
                rs_name, ns, template, field_manager=FIELD_MANAGER
            )
        )
        selector = f"{ROLLOUT_LABEL}={name},{REVISION_LABEL}={action.revision}"
        pods = call_api(lambda: self.core.list_namespaced_pod(ns, label_selector=selector))

        def patch_pod(pod_name: str) -> None:
            self._write(
                lambda: self.core.patch_namespaced_pod(
                    pod_name, ns, {"metadata": meta}, field_manager=FIELD_MANAGER
                )
            )

        for pod in pods.items:
            if pod.metadata and pod.metadata.name:
                with contextlib.suppress(NotFoundError):  # gone meanwhile
                    patch_pod(pod.metadata.name)
        tag = {"metadata": {"annotations": {ROLE_ANNOTATION: action.tag}}}
        self._write(
            lambda: self.apps.patch_namespaced_replica_set(
                rs_name, ns, tag, field_manager=FIELD_MANAGER
            )
        )
        log.info("role metadata set", replicaset=rs_name, role=action.tag, pods=len(pods.items))

    def ready_endpoints(self, namespace: str, service: str, pod_prefix: str) -> int | None:
        """How many pods whose names start with ``pod_prefix`` (a ReplicaSet's) are ready
        endpoints in ``service``'s EndpointSlices; None when the Service has no
        EndpointSlice at all. One LIST (a read, so no fence)."""
        found = call_api(
            lambda: self.discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
            )
        )
        if not found.items:
            return None
        pods: set[str] = set()
        for item in found.items:
            for endpoint in item.endpoints or []:
                ref = endpoint.target_ref
                ready = endpoint.conditions is not None and endpoint.conditions.ready
                if ready and ref is not None and (ref.name or "").startswith(pod_prefix):
                    pods.add(ref.name or "")
        return len(pods)

    # -- a workloadRef's Deployment ---------------------------------------------------

    def read_deployment(self, namespace: str, name: str) -> client.V1Deployment | None:
        """The Deployment, by GET (None when it does not exist); for a reconciler that
        has no Deployment informer. A read, so no fence."""
        try:
            found = call_api(lambda: self.apps.read_namespaced_deployment(name, namespace))
        except NotFoundError:
            return None
        assert isinstance(found, client.V1Deployment)
        return found

    def scale_deployment(
        self, namespace: str, rollout: str, change: ScaleDeployment, resource_version: str | None
    ) -> None:
        """Set a workloadRef Deployment's ``spec.replicas`` and annotate it with who did
        it, what it had before, and whether the scale-down is done (one merge patch,
        guarded by the resourceVersion it was read at: a stale view is a
        :class:`ConflictError`)."""
        meta: dict[str, Any] = {
            "annotations": {
                SCALED_BY_ANNOTATION: rollout,
                REPLICAS_BEFORE_ANNOTATION: str(change.before),
                SCALE_DOWN_ANNOTATION: "done" if change.done else "in-progress",
            }
        }
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        body = {"metadata": meta, "spec": {"replicas": change.replicas}}
        self._write(
            lambda: self.apps.patch_namespaced_deployment(
                change.name, namespace, body, field_manager=FIELD_MANAGER
            )
        )

    # -- the Rollout ----------------------------------------------------------------

    def patch_status(
        self, namespace: str, name: str, resource_version: str, status: RolloutStatus
    ) -> dict[str, Any]:
        """Write the whole status through the status subresource, guarded by
        ``resource_version`` (a stale view gets :class:`ConflictError`, never a silent
        overwrite). Fields that became empty are removed (explicit nulls)."""
        body = {
            "metadata": {"resourceVersion": resource_version},
            "status": status.model_dump(mode="json", by_alias=True),
        }
        result = self._write(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, field_manager=FIELD_MANAGER
            ),
        )
        assert isinstance(result, dict)
        return result

    def set_finalizer(self, rollout: dict[str, Any], present: bool) -> None:
        """Add or remove the cleanup finalizer (a JSON patch guarded by resourceVersion)."""
        meta = rollout["metadata"]
        current = list(meta.get("finalizers") or [])
        if (FINALIZER in current) == present:
            return
        wanted = [*current, FINALIZER] if present else [f for f in current if f != FINALIZER]
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {
                "op": "add" if "finalizers" not in meta else "replace",
                "path": "/metadata/finalizers",
                "value": wanted,
            },
        ]
        try:
            self._write(
                lambda: self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    meta["namespace"],
                    PLURAL,
                    meta["name"],
                    ops,
                    _content_type="application/json-patch+json",
                ),
            )
        except InvalidError as err:
            # A failed JSON-patch test is a stale view, like a 409.
            raise ConflictError(str(err)) from err

    def emit_event(self, rollout: dict[str, Any], event: Event, now: dt.datetime) -> None:
        """Record a Kubernetes Event on the Rollout (best effort: failures are logged)."""
        meta = rollout["metadata"]
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{meta['name']}.", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="Rollout",
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=event.reason,
            message=event.message[:1024],
            type=event.type,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="stepwise-controller"),
            reporting_component="stepwise.dev/controller",
            reporting_instance="stepwise-controller",
        )
        try:
            self._write(lambda: self.core.create_namespaced_event(meta["namespace"], body))
        except ApiError as err:
            log.warning("event not recorded", reason=event.reason, error=str(err))
