"""The SMI router through the whole controller, on the real API server: the TrafficSplit
it creates (owned by the Rollout) at every step, after abort, retry, promotion and
deletion; a split it does not own, or a missing Service, blocks the Rollout with a clear
status and is never written; writes racing another actor are retried, never lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.adapters.traffic.smi import SmiRouter
from controller.api import intents
from controller.api.rollout import HeaderMatch, Rollout
from controller.errors import ConflictError, InvalidSpecError
from localcluster.controller import ControllerProcess
from tests.integration.test_router_gatewayapi import WEIGHT_STEPS, at_step, replay
from tests.support.cluster import Cluster, NamespaceApi
from tests.support.kube import install_crds, wait_for
from tests.support.routing import SCALE_DOWN_AT_ONCE, rollout_owner, routed_rollout

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "split.smi-spec.io", "v1alpha2", "trafficsplits"
CRD = Path(__file__).resolve().parents[2] / "hack" / "crds" / "smi-trafficsplit.yaml"
HOLD = "tests.stepwise.dev/hold"


def spec(stable: int, canary: int, root: str = "app-stable") -> dict[str, Any]:
    """A TrafficSplit spec over the stable and canary Services."""
    return {
        "service": root,
        "backends": [
            {"service": "app-stable", "weight": stable},
            {"service": "app-canary", "weight": canary},
        ],
    }


class Splits(NamespaceApi):
    """TrafficSplits and Services of one test namespace."""

    def get(self, name: str = "app") -> dict[str, Any] | None:
        return self.find((GROUP, VERSION, PLURAL), name)

    def spec(self, name: str = "app") -> dict[str, Any] | None:
        split = self.get(name)
        return None if split is None else dict(split["spec"])

    def create(self, name: str, body_spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TrafficSplit",
            "metadata": {"name": name},
            "spec": body_spec,
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, body)


@pytest.fixture(scope="module")
def smi_crd(api_client: client.ApiClient) -> None:
    install_crds(api_client, [CRD])


@pytest.fixture
def env(kube: Cluster, api_client: client.ApiClient, smi_crd: None) -> tuple[Cluster, Splits]:
    return kube, Splits(api_client, kube.ns)


def smi_rollout(steps: list[dict[str, Any]], **smi: Any) -> dict[str, Any]:
    return routed_rollout({"smi": smi}, steps, **SCALE_DOWN_AT_ONCE)


def start(
    kube: Cluster, splits: Splits, steps: list[dict[str, Any]], **smi: Any
) -> tuple[str, str]:
    """Services and Rollout (no TrafficSplit); once the first revision is Healthy, roll out
    v2. Returns (stable, canary) revisions."""
    splits.service("app-stable")
    splits.service("app-canary")
    kube.create(smi_rollout(steps, **smi))
    wait_for("healthy", lambda: kube.status("app").get("phase") == "Healthy")
    assert splits.get(smi.get("trafficSplitName", "app")) is None  # 0% needs no split yet
    stable = kube.status("app")["stableRevision"]
    return stable, kube.set_image("app", "registry.local/app:v2")


def test_split_created_at_the_first_weight_and_promotion(
    env: tuple[Cluster, Splits], controller: ControllerProcess
) -> None:
    """The first setWeight creates the split, owned by the Rollout, at 80/20; the next
    gives 40/60; promotion pins the stable Service to the new revision and sends 100/0."""
    kube, splits = env
    _, canary = start(kube, splits, WEIGHT_STEPS)
    at_step(kube, 1)
    split = splits.get()
    assert split is not None
    assert split["metadata"]["ownerReferences"] == [rollout_owner(kube.get("app"))]
    assert split["spec"] == spec(80, 20)
    at_step(kube, 3)
    assert splits.spec() == spec(40, 60)
    kube.annotate("app", **{intents.PROMOTE: intents.promote_value(canary, 3)})
    wait_for("promoted", lambda: kube.status("app").get("stableRevision") == canary)
    assert splits.spec() == spec(100, 0)
    selector = splits.core.read_namespaced_service("app-stable", kube.ns).spec.selector
    assert selector["stepwise.dev/revision"] == canary


def test_abort_retry_and_deletion_with_a_separate_root_service(
    env: tuple[Cluster, Splits], controller: ControllerProcess
) -> None:
    """A named split of a separate root Service: abort sends 100/0; a retry goes back to
    80/20; deleting the Rollout then restores 100/0 (finalizer) before the split is
    garbage-collected with it."""
    kube, splits = env
    splits.service("app")
    _, canary = start(
        kube,
        splits,
        [{"setWeight": 20}, {"pause": {}}],
        trafficSplitName="app-split",
        rootService="app",
    )
    at_step(kube, 1)
    assert splits.spec("app-split") == spec(80, 20, root="app")
    splits.patch("app-split", {"metadata": {"finalizers": [HOLD]}})  # to read it after GC
    kube.annotate("app", **{intents.ABORT: canary})
    wait_for("aborted", lambda: kube.status("app").get("abort") is not None)
    wait_for("100/0", lambda: splits.spec("app-split") == spec(100, 0, root="app"))
    attempt = kube.status("app")["abort"]["attempt"]
    kube.annotate(
        "app", **{intents.ABORT: None, intents.RETRY: intents.retry_value(canary, attempt)}
    )
    wait_for("retried at 80/20", lambda: splits.spec("app-split") == spec(80, 20, root="app"))
    at_step(kube, 1)
    kube.custom.delete_namespaced_custom_object(
        "stepwise.dev", "v1alpha1", kube.ns, "rollouts", "app"
    )

    def collected() -> bool:
        split = splits.get("app-split")
        return split is not None and "deletionTimestamp" in split["metadata"]

    wait_for("split garbage-collected with the Rollout", collected)
    assert splits.spec("app-split") == spec(100, 0, root="app")
    splits.patch("app-split", {"metadata": {"finalizers": None}})
    wait_for("split gone", lambda: splits.get("app-split") is None)


# -- the router alone, with another actor's write injected at the fence -----------------


def router_for(kube: Cluster, splits: Splits, fence: Any) -> SmiRouter:
    """A router for a stored Rollout (its UID owns the split; no controller runs)."""
    stored = kube.create(smi_rollout([{"setWeight": 20}, {"pause": {}}]))
    return SmiRouter(splits.custom.api_client, Rollout.model_validate(stored), fence)


def test_a_write_racing_another_actor_is_retried_and_loses_nothing(
    env: tuple[Cluster, Splits],
) -> None:
    """Creating the split, then a patch whose resourceVersion test fails because another
    actor labelled the split at that moment: read again, patch again; both writes hold."""
    kube, splits = env
    splits.service("app-stable")
    splits.service("app-canary")
    fenced: list[int] = []

    def fence() -> None:
        fenced.append(len(fenced))
        if len(fenced) == 2:  # just before our first patch
            splits.patch("app", {"metadata": {"labels": {"team": "payments"}}})

    router = router_for(kube, splits, fence)
    assert router.observe().canary_weight == 0
    router.set_weight(20)  # create
    router.set_weight(50)  # patch, raced
    assert len(fenced) == 3
    split = splits.get()
    assert split is not None
    assert split["spec"] == spec(50, 50)
    assert split["metadata"]["labels"] == {"team": "payments"}
    assert router.observe().canary_weight == 50
    router.remove_header_route("beta")  # nothing to remove, no error
    with pytest.raises(InvalidSpecError, match="setHeaderRoute beta is not supported"):
        router.set_header_route("beta", (HeaderMatch.model_validate(BETA),))


BETA = {"headerName": "x-canary", "headerValue": {"exact": "beta"}}


def test_a_split_created_by_someone_else_meanwhile_is_not_taken_over(
    env: tuple[Cluster, Splits],
) -> None:
    """Another actor creates a split of that name just before ours: our create conflicts,
    the fresh read shows a split we do not control, and it is left as it is."""
    kube, splits = env
    splits.service("app-stable")
    splits.service("app-canary")

    def fence() -> None:
        if splits.get() is None:
            splits.create("app", spec(100, 0))

    with pytest.raises(ConflictError, match="not controlled by this Rollout"):
        router_for(kube, splits, fence).set_weight(20)
    split = splits.get()
    assert split is not None
    assert split["spec"] == spec(100, 0)
    assert "ownerReferences" not in split["metadata"]


# -- weighted experiment templates -----------------------------------------------------

EXPERIMENT_STEPS = [
    {"setWeight": 20},
    {
        "experiment": {
            "templates": [
                {"name": "baseline", "specRef": "stable", "weight": 5},
                {"name": "canary", "specRef": "canary", "weight": 10},
            ],
        }
    },
    {"pause": {}},
]


def test_a_weighted_experiment_is_split_to_and_an_abort_sends_all_to_stable(
    env: tuple[Cluster, Splits], controller: ControllerProcess
) -> None:
    """While the experiment runs (no duration: until promoted) the TrafficSplit sends 65
    to stable, 20 to the canary and 5 and 10 to the experiment Services (created for
    the weighted templates, named after their ReplicaSets); an abort sends everything
    to stable with two backends again, and only then are the experiment's Services
    deleted."""
    kube, splits = env
    _, canary = start(kube, splits, EXPERIMENT_STEPS)
    held = wait_for(
        "experiment backends in the split",
        lambda: (s := splits.spec()) is not None and len(s["backends"]) == 4 and s,
        60,
    )
    # The pass writes the split before the status that records the phase it decided.
    experiment = wait_for(
        "experiment Running in the status",
        lambda: (e := kube.status("app")["experiment"])["phase"] == "Running" and e,
        10,
    )
    names = {t["name"]: t["replicaSet"][:63].rstrip("-") for t in experiment["templates"]}
    assert held["backends"] == [
        {"service": "app-stable", "weight": 65},
        {"service": "app-canary", "weight": 20},
        {"service": names["baseline"], "weight": 5},
        {"service": names["canary"], "weight": 10},
    ]
    for name in names.values():
        kube.core.read_namespaced_service(name, kube.ns)
    split = splits.get()
    assert split is not None
    since = str(split["metadata"]["resourceVersion"])
    kube.annotate("app", **{intents.ABORT: canary})
    wait_for("experiment Services deleted", lambda: not _experiment_services(kube), 30)
    assert splits.spec() == spec(100, 0)
    status = kube.status("app")
    assert status["experiment"]["phase"] == "Terminated"
    assert status["canaryWeight"] == 0
    # In the API server's own order (one etcd: resourceVersions compare across kinds),
    # the split lost the experiment backends before either Service was deleted.
    deleted = [
        int(obj.metadata.resource_version)
        for kind, obj in replay(kube.core.list_namespaced_service, kube.ns, since=since)
        if kind == "DELETED" and obj.metadata.name in names.values()
    ]
    assert len(deleted) == 2
    writes = replay(
        splits.custom.list_namespaced_custom_object, GROUP, VERSION, kube.ns, PLURAL, since=since
    )
    two_way = [
        int(obj["metadata"]["resourceVersion"])
        for kind, obj in writes
        if kind == "MODIFIED" and len(obj["spec"]["backends"]) == 2
    ]
    assert two_way
    assert min(two_way) < min(deleted)


def _experiment_services(kube: Cluster) -> list[Any]:
    return list(
        kube.core.list_namespaced_service(kube.ns, label_selector="stepwise.dev/experiment").items
    )
