"""The admin API for one namespace, as the router integration tests use it: Rollouts
(named ``app`` by default), Services and Warning events; and another actor that keeps
editing an object while the controller writes it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client

from controller.core.hashing import template_hash
from tests.support.kube import wait_for

STEPWISE = ("stepwise.dev", "v1alpha1", "rollouts")


class RolloutNamespace:
    """Rollouts, Services and events of one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    # Services
    def service(self, name: str) -> None:
        body = client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(
                type="ClusterIP",
                selector={"app": "app"},
                ports=[client.V1ServicePort(port=80, target_port=8080)],
            ),
        )
        self.core.create_namespaced_service(self.ns, body)

    # Rollouts
    def create(self, doc: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(*STEPWISE[:2], self.ns, STEPWISE[2], doc)

    def get(self, name: str = "app") -> dict[str, Any] | None:
        try:
            found = self.custom.get_namespaced_custom_object(
                *STEPWISE[:2], self.ns, STEPWISE[2], name
            )
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        assert isinstance(found, dict)
        return found

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


def blocked_on_missing_service(world: RolloutNamespace, service: str) -> dict[str, Any]:
    """Wait until the Rollout is Degraded naming ``service`` with a Warning event, then
    start a new revision and show it held at step 0 with weight 0 and a Progressing
    condition naming the Service; returns that status."""
    named = f"Service {service}"

    def blocked() -> bool:
        status = world.status()
        return status.get("phase") == "Degraded" and named in status.get("message", "")

    wait_for("degraded", blocked)
    wait_for("warning", lambda: any(named in w for w in world.warnings()))
    second = world.set_image("registry.local/app:v2")
    wait_for("canary seen", lambda: world.status().get("canaryRevision") == second)
    assert blocked()
    status = world.status()
    assert (status["currentStepIndex"], status["canaryWeight"]) == (0, 0)
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutDegraded")
    assert named in progressing["message"]
    return status


class Editor:
    """Another actor editing an object over and over until stopped: read, change with
    ``edit(obj, version)``, write back whole (PUT with the resourceVersion read; a 409
    means someone wrote meanwhile, and the next round reads again). ``last`` is the
    version of its last successful write (0: none yet). With ``version_of`` (the edit
    version an object shows), every read must show ``last``: anything else is an edit of
    ours that someone else's write lost, and ``__exit__`` fails naming it."""

    def __init__(
        self,
        read: Callable[[], dict[str, Any]],
        replace: Callable[[dict[str, Any]], object],
        edit: Callable[[dict[str, Any], int], None],
        version_of: Callable[[dict[str, Any]], int] | None = None,
        interval: float = 0.02,
    ) -> None:
        self.read, self.replace, self.edit = read, replace, edit
        self.version_of = version_of
        self.interval = interval
        self.last = 0
        self.conflicts = 0
        self.lost: list[tuple[int, int]] = []
        """(version written, version read next) for each edit found undone."""
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

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

    def __enter__(self) -> Editor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the editor did not stop"
        if self.error is not None:
            raise AssertionError(f"the editor failed: {self.error!r}") from self.error
        assert not self.lost, f"edits undone by another write (written, then read): {self.lost}"
