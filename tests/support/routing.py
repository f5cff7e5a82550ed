"""The admin API for one namespace, as the router integration tests use it: Rollouts
(named ``app`` by default), Services and Warning events; the routed Rollout they start
from; and another actor that keeps editing an object while the controller writes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from controller.core.hashing import template_hash
from tests.support.background import Background
from tests.support.cluster import NamespaceApi
from tests.support.kube import wait_for
from tests.support.manifests import rollout

STEPWISE = ("stepwise.dev", "v1alpha1", "rollouts")
SCALE_DOWN_AT_ONCE = {"abortScaleDownDelaySeconds": 0, "scaleDownDelaySeconds": 0}
"""Canary settings that leave no old pods waiting out a delay."""


def routed_rollout(
    traffic_routing: dict[str, Any], steps: list[dict[str, Any]], replicas: int = 2, **canary: Any
) -> dict[str, Any]:
    """The Rollout ``app`` routed by ``traffic_routing`` over the Services ``app-stable``
    and ``app-canary``."""
    return rollout(
        "app",
        replicas=replicas,
        steps=steps,
        stableService="app-stable",
        canaryService="app-canary",
        trafficRouting=traffic_routing,
        **canary,
    )


def rollout_owner(doc: dict[str, Any]) -> dict[str, Any]:
    """The ownerReference to the Rollout ``doc`` on the objects Stepwise creates for it."""
    return {
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "Rollout",
        "name": doc["metadata"]["name"],
        "uid": doc["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class RolloutNamespace(NamespaceApi):
    """Rollouts, Services and events of one namespace."""

    # Rollouts
    def create(self, doc: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(*STEPWISE[:2], self.ns, STEPWISE[2], doc)

    def get(self, name: str = "app") -> dict[str, Any] | None:
        return self.find(STEPWISE, name)

    def wait_paused(self, index: int) -> None:
        """Wait until the Rollout ``app`` is Paused at step ``index``."""

        def paused() -> bool:
            status = self.status()
            return status.get("currentStepIndex") == index and status.get("phase") == "Paused"

        wait_for(f"paused at step {index}", paused)

    def status(self, name: str = "app") -> dict[str, Any]:
        return (self.get(name) or {}).get("status") or {}

    def patch(self, body: dict[str, Any], name: str = "app") -> None:
        self.custom.patch_namespaced_custom_object(*STEPWISE[:2], self.ns, STEPWISE[2], name, body)

    def set_image(self, image: str, name: str = "app") -> str:
        doc = self.get(name)
        assert doc is not None
        doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.patch({"spec": {"template": doc["spec"]["template"]}}, name)
        return template_hash(doc["spec"]["template"])

    def annotate(self, name: str = "app", **ann: str | None) -> None:
        self.patch({"metadata": {"annotations": ann}}, name)

    def poke(self, value: str, name: str = "app") -> None:
        """Touch the Rollout so that it is reconciled now (routers are not watched)."""
        self.patch({"metadata": {"labels": {"poke": value}}}, name)

    def ready(self, replica_set: str) -> int:
        """Ready pods of a ReplicaSet (0 if it is missing)."""
        try:
            rs = self.apps.read_namespaced_replica_set(replica_set, self.ns)
        except client.exceptions.ApiException:
            return 0
        return rs.status.ready_replicas or 0

    def delete(self, name: str = "app") -> None:
        self.custom.delete_namespaced_custom_object(*STEPWISE[:2], self.ns, STEPWISE[2], name)

    def warnings(self, name: str = "app") -> list[str]:
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name},type=Warning"
        ).items
        return [f"{e.reason}: {e.message}" for e in items]


def degraded_by(world: RolloutNamespace, problem: str) -> None:
    """Wait until the Rollout's status message names ``problem``, show it Degraded, and
    wait for a Warning event naming ``problem``."""
    wait_for("degraded", lambda: problem in world.status().get("message", ""))
    assert world.status()["phase"] == "Degraded", world.status()
    wait_for("warning", lambda: any(problem in w for w in world.warnings()))


def blocked_on(world: RolloutNamespace, problem: str, *, canary_pods: bool = False) -> None:
    """Wait until the Rollout is Degraded naming ``problem`` with a Warning event, then
    start a new revision and show it held at step 0 with weight 0 and a Progressing
    condition naming ``problem`` (with ``canary_pods``, once the canary has a ready pod:
    the next pass would route to it, were it not blocked)."""
    degraded_by(world, problem)
    canary = world.set_image("registry.local/app:v2")
    wait_for("canary seen", lambda: world.status().get("canaryRevision") == canary)
    if canary_pods:
        wait_for("canary pods", lambda: world.ready(f"app-{canary}") >= 1)
    status = world.status()
    assert status.get("phase") == "Degraded", status
    assert problem in status.get("message", ""), status
    assert (status["currentStepIndex"], status["canaryWeight"]) == (0, 0)
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutDegraded")
    assert problem in progressing["message"]


class Editor(Background):
    """Another actor editing an object over and over until stopped: read, change with
    ``edit(obj, version)``, write back whole (PUT with the resourceVersion read; a 409
    means someone wrote meanwhile, and the next round reads again). ``last`` is the
    version of its last successful write (0: none yet). With ``version_of`` (the edit
    version an object shows), every read must show ``last``: anything else is an edit of
    ours that someone else's write lost, and ``__exit__`` fails naming it."""

    join_timeout = 10.0

    def __init__(
        self,
        read: Callable[[], dict[str, Any]],
        replace: Callable[[dict[str, Any]], object],
        edit: Callable[[dict[str, Any], int], None],
        version_of: Callable[[dict[str, Any]], int] | None = None,
        interval: float = 0.02,
    ) -> None:
        super().__init__()
        self.read, self.replace, self.edit = read, replace, edit
        self.version_of = version_of
        self.interval = interval
        self.last = 0
        self.conflicts = 0
        self.lost: list[tuple[int, int]] = []
        """(version written, version read next) for each edit found undone."""
        self.error: BaseException | None = None

    def _run(self) -> None:
        version = self.last
        try:
            while not self._stop.is_set():
                version += 1
                obj = self.read()
                if self.version_of is not None and (seen := self.version_of(obj)) != self.last:
                    self.lost.append((self.last, seen))
                self.edit(obj, version)
                try:
                    self.replace(obj)
                    self.last = version
                except client.exceptions.ApiException as exc:
                    if exc.status != 409:
                        raise
                    self.conflicts += 1
                self._stop.wait(self.interval)
        except BaseException as exc:  # reported by __exit__, in the test's thread
            self.error = exc

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        assert not self._thread.is_alive(), "the editor did not stop"
        if self.error is not None:
            raise AssertionError(f"the editor failed: {self.error!r}") from self.error
        assert not self.lost, f"edits undone by another write (written, then read): {self.lost}"
