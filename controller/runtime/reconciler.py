"""One reconcile of one Rollout: read the cache, observe, plan, act, persist status once.

The work queue hands a ``namespace/name`` key to :meth:`Reconciler.reconcile`, which:

1. reads the Rollout from the informer cache (a copy; never the event that queued it);
2. parses it: a spec the models reject gets an InvalidSpec condition and no retry; a
   ``spec.workloadRef`` takes the referenced Deployment's pod template and selector
   from its informer (:mod:`controller.core.workload`; a Deployment that is missing or
   of another kind is an InvalidSpec naming the field, until the Deployment changes);
3. observes its ReplicaSets, Services, analysis templates and router, and takes the
   measurements that are due;
4. asks :func:`controller.core.plan.plan` what to do;
5. carries out the actions in order (any failure stops the pass before the status is
   written, so the next pass decides again from the world as it is), then scales a
   workloadRef Deployment as its ``scaleDown`` says;
6. writes the status through the ``/status`` subresource only if it changed, guarded by
   the resourceVersion it read (a stale cache gets a 409 and a retry, never an overwrite);
7. only then records the events and updates the metrics.

It returns how long until the Rollout must be looked at again (or None).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any, Protocol

import structlog
from kubernetes import client
from pydantic import ValidationError

from controller.adapters.experiments import (
    ExperimentSets,
    experiment_set_state,
    is_experiment_set,
)
from controller.adapters.kube import (
    REVISION_LABEL,
    ROLLOUT_LABEL,
    KubeAdapter,
    adoptable,
    deployment_state,
    owned_by,
    replica_set_state,
)
from controller.adapters.traffic import Router
from controller.api.analysis import AnalysisTemplateSpec
from controller.api.rollout import (
    CanaryStrategy,
    Measurement,
    Rollout,
    RolloutAnalysis,
    RolloutStatus,
    WorkloadRef,
)
from controller.api.types import LabelSelector
from controller.api.validation import problems_of
from controller.clock import SYSTEM_CLOCK, Clock
from controller.core import analysis as an
from controller.core import experiment
from controller.core import workload as wl
from controller.core.batching import write_at
from controller.core.conditions import describe_action, invalid_spec, refused, refused_retry
from controller.core.finalize import finalize_actions
from controller.core.model import (
    Action,
    DeleteExperimentSet,
    DeleteReplicaSet,
    Event,
    ExperimentSetState,
    Observed,
    PinService,
    Plan,
    RemoveHeaderRoute,
    ReplicaSetState,
    ScaleExperimentSet,
    ScaleReplicaSet,
    SetHeaderRoute,
    SetMirrorRoute,
    SetRoleMetadata,
    SetWeight,
    TemplateKey,
    TrafficState,
)
from controller.core.overlap import Selecting, older_overlap, overlap_problem
from controller.core.plan import plan
from controller.core.record import failure_window_start
from controller.errors import ApiError, ForbiddenError, InvalidError, NotFoundError
from controller.runtime.informer import Cache, version_of

log = structlog.get_logger()


class Measurer(Protocol):
    """Takes the measurements that are due (never raises: failures are Error)."""

    def measure(
        self, rollout: Rollout, due: list[an.Due], now: dt.datetime
    ) -> dict[tuple[str, str], Measurement]:
        """One judged measurement per due metric, keyed by (run, metric)."""
        ...


RouterFactory = Callable[[Rollout], Router | None]


def no_router(rollout: Rollout) -> Router | None:
    """Replica-ratio only: no router for any Rollout."""
    return None


@dataclass
class Informers:
    """The caches the reconciler reads."""

    rollouts: Cache[dict[str, Any]]
    replica_sets: Cache[client.V1ReplicaSet]
    services: Cache[client.V1Service]
    templates: Cache[dict[str, Any]] | None = None
    cluster_templates: Cache[dict[str, Any]] | None = None
    deployments: Cache[client.V1Deployment] | None = None
    """Deployments that ``spec.workloadRef`` may name (None: read by GET)."""


class Observer(Protocol):
    """Hooks for metrics (the runtime's metrics module implements them)."""

    def reconciled(self, rollout: Rollout, status: RolloutStatus) -> None:
        """A pass finished with this status."""
        ...

    def measured(
        self, rollout: Rollout, measurements: Mapping[tuple[str, str], Measurement]
    ) -> None:
        """Measurements were taken."""
        ...

    def rolled_back(self, rollout: Rollout, seconds: float) -> None:
        """Traffic left a failed canary ``seconds`` after its first failed measurement."""
        ...

    def deleted(self, namespace: str, name: str) -> None:
        """The Rollout is gone: drop what was kept about it."""
        ...


@dataclass(frozen=True)
class Unwritten:
    """A status this process decided but has not written yet (tallies only; see
    :mod:`controller.core.batching`), and the status the API server holds under it."""

    uid: str
    persisted: RolloutStatus
    wanted: RolloutStatus
    since: dt.datetime


CACHE_BEHIND_RECHECK = 0.2
"""Seconds before a pass that found the cache behind our own status write tries again."""
CACHE_BEHIND_LIMIT = 5.0
"""Seconds a key waits for the cache to show our status write before it reconciles on
whatever the cache has (a watch that stalls must not stall the Rollout)."""


@dataclass(eq=False)
class Reconciler:
    """Reconciles Rollouts; safe to call from several worker threads (one key at a time)."""

    informers: Informers
    kube: KubeAdapter
    _: KW_ONLY
    clock: Clock = SYSTEM_CLOCK
    measurer: Measurer | None = None
    routers: RouterFactory = no_router
    observer: Observer | None = None

    def __post_init__(self) -> None:
        self.experiments = ExperimentSets(self.kube)
        self._unwritten: dict[str, Unwritten] = {}
        self._unwritten_lock = threading.Lock()
        self._behind: dict[str, tuple[str, float]] = {}
        """Per key, the resourceVersion our last status write replaced (and until when to
        wait for the cache): a cache still showing it has not seen that write, and a
        pass on it would act on the past."""
        self._selecting: dict[str | None, dict[str, tuple[str, Selecting | None]]] = {}
        """Per namespace, each Rollout's parsed selector by resourceVersion. Workers
        replace a namespace's map whole; a race only parses a Rollout twice."""

    def reconcile(self, key: str) -> float | None:
        """One pass for the Rollout ``namespace/name``; seconds until the next, or None."""
        raw = self.informers.rollouts.get(key)
        if raw is None:
            self._take_unwritten(key)
            with self._unwritten_lock:
                self._behind.pop(key, None)
            if self.observer is not None:
                namespace, _, name = key.partition("/")
                self.observer.deleted(namespace, name)
            return None
        namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        with self._unwritten_lock:
            behind = self._behind.get(key)
            if behind is not None and (
                behind[0] != raw["metadata"].get("resourceVersion")
                or self.clock.monotonic() > behind[1]
            ):
                del self._behind[key]
                behind = None
        if behind is not None:
            # Our own status write is not in the cache yet: a pass on this copy would redo
            # what the last one did (re-pin, re-scale, undo a promotion) before its status
            # write failed on the conflict. The watch brings the write in a moment.
            log.debug("cache behind our status write; waiting", rollout=name, namespace=namespace)
            return CACHE_BEHIND_RECHECK
        with structlog.contextvars.bound_contextvars(
            rollout=name, namespace=namespace, reconcile_id=uuid.uuid4().hex[:12]
        ):
            return self._reconcile(key, raw)

    def _take_unwritten(self, key: str) -> Unwritten | None:
        with self._unwritten_lock:
            return self._unwritten.pop(key, None)

    def _keep_unwritten(self, key: str, unwritten: Unwritten | None) -> None:
        with self._unwritten_lock:
            if unwritten is None:
                self._unwritten.pop(key, None)
            else:
                self._unwritten[key] = unwritten

    def _reconcile(self, key: str, raw: dict[str, Any]) -> float | None:
        now = self.clock.now()
        with self._unwritten_lock:
            unwritten = self._unwritten.get(key)
        try:
            rollout = Rollout.model_validate(raw)
        except ValidationError as exc:
            self._take_unwritten(key)
            self._invalid(raw, exc, now)
            return None
        persisted = rollout.status
        rollout, unwritten = self._resume(rollout, unwritten)
        router = self.routers(rollout)
        if rollout.metadata.deletion_timestamp is not None:
            self._finalize(raw, rollout, router)
            return None
        ref = rollout.spec.workload_ref
        admitted = self._admit(key, raw, rollout, now)
        if admitted is None:
            return None
        raw, rollout, deployment = admitted
        if router is not None:
            self.kube.set_finalizer(raw, present=True)

        observed = self._observe(raw, rollout, router, now)
        result = plan(rollout, observed, now)
        if router is not None:
            router.planned(result.status)
        for action in result.actions:
            log.info("action", action=type(action).__name__, **_fields(action))
            try:
                self._apply(raw, action, router)
            except (InvalidError, ForbiddenError, NotFoundError) as exc:
                # Refused: retrying the same request changes nothing until someone
                # changes the spec, the object or the permissions.
                self._take_unwritten(key)
                what = describe_action(action, rollout.metadata.name)
                return self._refused(raw, rollout, persisted, what, exc, now)
        scaled = self._scale_down(key, raw, rollout, persisted, ref, deployment, result, now)
        if isinstance(scaled, float):
            return scaled
        events = [*result.events, *scaled]
        requeue = self._persist(
            key, raw, rollout, persisted, unwritten, result.status, result.requeue_after, now
        )
        for event in events:
            self.kube.emit_event(raw, event, now)
            log.info("event", reason=event.reason, message=event.message, type=event.type)
        if self.observer is not None:
            # Read the clock after the router's write was verified: traffic is on stable.
            seconds = _rollback_seconds(rollout.status, result.status, self.clock.now())
            if seconds is not None:
                self.observer.rolled_back(rollout, seconds)
                log.info("rolled back", seconds_since_first_failure=round(seconds, 3))
            self.observer.reconciled(rollout, result.status)
            if observed.measurements:
                self.observer.measured(rollout, observed.measurements)
        return requeue

    # -- the status -------------------------------------------------------------------

    @staticmethod
    def _resume(rollout: Rollout, unwritten: Unwritten | None) -> tuple[Rollout, Unwritten | None]:
        """The Rollout with the status this process decided but has not written, when
        nobody has written the status since (else the unwritten one is dropped)."""
        if (
            unwritten is None
            or unwritten.uid != rollout.metadata.uid
            or unwritten.persisted != rollout.status
        ):
            return rollout, None
        return rollout.model_copy(update={"status": unwritten.wanted}), unwritten

    def _persist(
        self,
        key: str,
        raw: dict[str, Any],
        rollout: Rollout,
        persisted: RolloutStatus,
        unwritten: Unwritten | None,
        wanted: RolloutStatus,
        requeue: float | None,
        now: dt.datetime,
    ) -> float | None:
        """Write ``wanted`` now, or keep it until its tallies are due (see
        :mod:`controller.core.batching`); the requeue, shortened to that moment."""
        when = write_at(persisted, wanted, unwritten.since if unwritten else None, now)
        if when is not None and when > now:
            since = unwritten.since if unwritten else now
            uid = str(rollout.metadata.uid)
            self._keep_unwritten(key, Unwritten(uid, persisted, wanted, since))
            wait = (when - now).total_seconds()
            return wait if requeue is None else min(requeue, wait)
        if when is not None:
            # A failed write raises before the unwritten status is dropped: kept for the retry.
            before = raw["metadata"]["resourceVersion"]
            written = self._write_status(raw, wanted)
            if (written.get("metadata") or {}).get("resourceVersion") != before:
                with self._unwritten_lock:
                    self._behind[key] = (before, self.clock.monotonic() + CACHE_BEHIND_LIMIT)
            log.info(
                "status written",
                phase=wanted.phase,
                step=wanted.current_step_index,
                weight=wanted.canary_weight,
                message=wanted.message,
            )
        self._keep_unwritten(key, None)
        return requeue

    def _write_status(self, raw: dict[str, Any], status: RolloutStatus) -> dict[str, Any]:
        """Write ``status`` on the Rollout as read (``raw``), guarded by the resourceVersion
        it was read at; the Rollout as written."""
        meta = raw["metadata"]
        return self.kube.patch_status(
            meta["namespace"], meta["name"], meta["resourceVersion"], status
        )

    # -- observation ------------------------------------------------------------------

    def _observe(
        self, raw: dict[str, Any], rollout: Rollout, router: Router | None, now: dt.datetime
    ) -> Observed:
        namespace = raw["metadata"]["namespace"]
        uid = raw["metadata"]["uid"]
        sets: list[ReplicaSetState] = []
        owned_labels = {ROLLOUT_LABEL: rollout.metadata.name}
        experiment_sets: list[ExperimentSetState] = []
        for rs in self.informers.replica_sets.list(namespace, owned_labels):
            meta = rs.metadata
            if meta is None or meta.namespace != namespace:
                continue
            if is_experiment_set(rs):  # an experiment step's, never a revision
                if (found := experiment_set_state(rs, uid)) is not None:
                    experiment_sets.append(found)
                continue
            if not owned_by(meta, uid):
                if not adoptable(meta, raw):
                    continue  # someone else's
                self.kube.adopt_replica_set(raw, rs)
            state = replica_set_state(rs)
            if state is not None:
                sets.append(state)
        revisions: dict[str, str | None] = {}
        missing: set[str] = set()
        for service in rollout.spec.strategy.services:
            if service is None:
                continue
            svc = self.informers.services.get(f"{namespace}/{service}")
            if svc is None:
                missing.add(service)
            else:
                selector = (svc.spec.selector if svc.spec else None) or {}
                revisions[service] = selector.get(REVISION_LABEL)
        templates = self._templates(namespace, rollout)
        traffic: TrafficState | None = router.observe() if router is not None else None
        observed = Observed(
            replica_sets=tuple(sets),
            traffic=traffic,
            service_revisions=revisions,
            missing_services=frozenset(missing),
            templates=templates,
            canary_endpoints=self._canary_endpoints(
                namespace, rollout.spec.strategy.canary, revisions, sets, traffic
            ),
            experiment_sets=tuple(experiment_sets),
        )
        due = an.due_in(rollout, templates, now) + experiment.due_in(rollout, templates, now)
        if due and self.measurer is not None:
            # A measuring pool answers only what has finished; the rest is being taken.
            measurements = self.measurer.measure(rollout, due, now)
            measuring = {(d.run, d.metric.name) for d in due} - set(measurements)
            observed = dataclasses.replace(
                observed, measurements=measurements, measuring=frozenset(measuring)
            )
        return observed

    def _canary_endpoints(
        self,
        namespace: str,
        canary: CanaryStrategy | None,
        revisions: dict[str, str | None],
        sets: list[ReplicaSetState],
        traffic: TrafficState | None,
    ) -> int | None:
        """The canary's ready endpoints in the canary Service's EndpointSlices
        (:attr:`Observed.canary_endpoints`), read only in a pass that may give the canary
        its first share: traffic routed, none on the canary yet, the canary Service pinned
        to a revision other than the stable's, and some of its pods Ready.

        Only where something publishes these pods' endpoints at all: the stable Service's
        slices must list a stable pod as ready. A cluster whose slices stay empty (the
        local test cluster's fake pods on loopback addresses, which the API server
        refuses in EndpointSlices) would otherwise hold every canary at 0 forever."""
        if canary is None or traffic is None or traffic.canary_weight != 0:
            return None
        service, stable_service = canary.canary_service, canary.stable_service
        if service is None or stable_service is None:
            return None
        revision, stable = revisions.get(service), revisions.get(stable_service)
        if revision is None or revision == stable:
            return None
        rs = next((s for s in sets if s.revision == revision), None)
        stable_rs = next((s for s in sets if s.revision == stable), None)
        if rs is None or rs.ready == 0 or stable_rs is None:
            return None
        try:
            if not self.kube.ready_endpoints(namespace, stable_service, f"{stable_rs.name}-"):
                return None  # no publisher for these pods here: the pods alone decide
            return self.kube.ready_endpoints(namespace, service, f"{rs.name}-")
        except ApiError as err:
            # Unknown is not zero: without the read the weight waits for pods only.
            log.warning("cannot read EndpointSlices", service=service, error=str(err))
            return None

    def _templates(
        self, namespace: str, rollout: Rollout
    ) -> dict[TemplateKey, AnalysisTemplateSpec | str]:
        out: dict[TemplateKey, AnalysisTemplateSpec | str] = {}
        for analysis in _analyses(rollout):
            for ref in analysis.templates:
                key = TemplateKey(ref.template_name, ref.cluster_scope)
                informer = (
                    self.informers.cluster_templates
                    if ref.cluster_scope
                    else self.informers.templates
                )
                cache_key = (
                    ref.template_name if ref.cluster_scope else f"{namespace}/{ref.template_name}"
                )
                found = informer.get(cache_key) if informer is not None else None
                if found is None:
                    out[key] = "not found" if informer is not None else "templates are not watched"
                    continue
                try:
                    spec = AnalysisTemplateSpec.model_validate(found.get("spec") or {})
                except ValidationError as exc:
                    problems = "; ".join(f"{f}: {r}" for f, r in problems_of(exc))
                    out[key] = f"invalid: {problems}"
                    continue
                unparsable = an.condition_problems(spec)
                out[key] = (
                    "invalid: " + "; ".join(f"{f}: {r}" for f, r in unparsable)
                    if unparsable
                    else spec
                )
        return out

    # -- actions ----------------------------------------------------------------------

    def _apply(self, raw: dict[str, Any], action: Action, router: Router | None) -> None:
        namespace = raw["metadata"]["namespace"]
        if isinstance(action, ScaleReplicaSet):
            self.kube.scale_replica_set(raw, action.revision, action.replicas)
        elif isinstance(action, PinService):
            self.kube.pin_service(namespace, action.service, action.revision)
        elif isinstance(action, DeleteReplicaSet):
            self.kube.delete_replica_set(namespace, action.name)
        elif isinstance(action, SetRoleMetadata):
            self.kube.set_role_metadata(raw, action)
        elif isinstance(action, ScaleExperimentSet):
            self.experiments.scale(raw, action)
        elif isinstance(action, DeleteExperimentSet):
            self.experiments.delete(namespace, action)
        elif router is None:
            raise RuntimeError(f"{type(action).__name__} needs a traffic router")
        elif isinstance(action, SetWeight):
            router.set_weight(action.weight, action.extra)
        elif isinstance(action, SetHeaderRoute):
            router.set_header_route(action.name, action.match)
        elif isinstance(action, SetMirrorRoute):
            router.set_mirror_route(action.name, action.match, action.percentage)
        elif isinstance(action, RemoveHeaderRoute):
            router.remove_header_route(action.name)

    def _refused(
        self,
        raw: dict[str, Any],
        rollout: Rollout,
        persisted: RolloutStatus,
        what: str,
        exc: InvalidError | ForbiddenError | NotFoundError,
        now: dt.datetime,
    ) -> float:
        """Report a refused write (``what``: the object and what was asked of it) in the
        status (ActionRefused, the message, Blocked) and one Warning event per new
        refusal; look again after as long as it has been refused (5 s to a minute)."""
        status, changed = refused(rollout.status, what, exc.status, exc.reason, str(exc), now)
        log.warning("action refused", status=exc.status, error=str(exc))
        if status != persisted:
            self._write_status(raw, status)
        if changed:
            self.kube.emit_event(raw, Event("ActionRefused", status.message, "Warning"), now)
        return refused_retry(status, now)

    def _neighbours(self, namespace: str | None) -> list[Selecting]:
        """The Rollouts of the namespace, as far as selectors go (a Rollout whose selector
        or labels do not parse selects nothing). Each Rollout is read and parsed once per
        resourceVersion: a pass costs a dictionary lookup per neighbour, not a copy and a
        parse (copying the namespace's Rollouts on every pass cost 25 ms a pass with 100
        of them)."""
        seen = self._selecting.get(namespace, {})
        now: dict[str, tuple[str, Selecting | None]] = {}
        for key, version in self.informers.rollouts.versions(namespace).items():
            cached = seen.get(key)
            if cached is not None and cached[0] == version:
                now[key] = cached
            elif (raw := self.informers.rollouts.get(key)) is not None:
                if (raw.get("spec") or {}).get("workloadRef"):
                    # Selects what its Deployment's template and selector say: parsed again
                    # each pass, as the Deployment may have changed (never cached as seen).
                    now[key] = (f"{version_of(raw)}+workloadRef", self._workload_selecting(raw))
                else:
                    now[key] = (version_of(raw), _selecting(raw))
        self._selecting[namespace] = now
        return [parsed for _, parsed in now.values() if parsed is not None]

    # -- spec.workloadRef --------------------------------------------------------------

    def _deployment(
        self, namespace: str, name: str, *, cached_only: bool = False
    ) -> wl.Deployment | None:
        """The Deployment ``namespace/name`` from the informer (by GET without one, unless
        ``cached_only``); None when it does not exist."""
        cache = self.informers.deployments
        if cache is not None:
            found = cache.get(f"{namespace}/{name}")
        elif cached_only:
            return None
        else:
            found = self.kube.read_deployment(namespace, name)
        return deployment_state(found) if found is not None else None

    def _admit(
        self, key: str, raw: dict[str, Any], rollout: Rollout, now: dt.datetime
    ) -> tuple[dict[str, Any], Rollout, wl.Deployment | None] | None:
        """The Rollout to plan for (stored and parsed form) and its workloadRef
        Deployment (None without one); None when it may not act, reported as InvalidSpec:
        its ``workloadRef`` cannot be resolved (:func:`controller.core.workload.resolve`;
        the Deployment's informer queues the Rollout again when that changes), or its
        selector overlaps an older Rollout's (:mod:`controller.core.overlap`).

        From here on a workloadRef Rollout is as if its Deployment's pod template (and
        selector) were written in its spec, so its ReplicaSets are built from them and a
        change to them starts a new revision."""
        ref = rollout.spec.workload_ref
        found: wl.Deployment | None = None
        if ref is not None:
            if wl.unsupported(ref) is None:
                found = self._deployment(raw["metadata"]["namespace"], ref.name)
            resolved = wl.resolve(rollout, found)
            if isinstance(resolved, list):
                self._take_unwritten(key)
                self._report_invalid(raw, resolved, now)
                return None
            spec = {**raw["spec"], "template": resolved.template, "selector": resolved.selector}
            raw, rollout = {**raw, "spec": spec}, resolved.rollout
        me = Selecting(
            rollout.metadata.name,
            rollout.metadata.creation_timestamp,
            rollout.spec.pod_selector,
            rollout.spec.pod_template.metadata.labels or {},
        )
        other = older_overlap(me, self._neighbours(rollout.metadata.namespace))
        if other is not None:
            self._take_unwritten(key)
            self._report_invalid(raw, [overlap_problem(other)], now)
            return None
        return raw, rollout, found

    def _scale_down(
        self,
        key: str,
        raw: dict[str, Any],
        rollout: Rollout,
        persisted: RolloutStatus,
        ref: WorkloadRef | None,
        deployment: wl.Deployment | None,
        result: Plan,
        now: dt.datetime,
    ) -> list[Event] | float:
        """Scale the workloadRef Deployment as ``ref.scaleDown`` asks, given the status
        this pass decided (:func:`controller.core.workload.scale_deployment`): the event
        to record once the status is written (none when nothing was written), or, when
        the API server refuses the write, the refusal reported as for an action and the
        seconds until the next look."""
        if ref is None or deployment is None:
            return []
        change = wl.scale_deployment(
            ref.scale_down,
            deployment,
            replicas=rollout.spec.replicas,
            ready=result.status.ready_replicas,
            healthy=result.status.phase == "Healthy",
        )
        if change is None:
            return []
        log.info("action", action=type(change).__name__, **_fields(change))
        try:
            self.kube.scale_deployment(
                raw["metadata"]["namespace"],
                rollout.metadata.name,
                change,
                deployment.resource_version,
            )
        except (InvalidError, ForbiddenError, NotFoundError) as exc:
            self._take_unwritten(key)
            what = f"Deployment {change.name}: scale to {change.replicas}"
            return self._refused(raw, rollout, persisted, what, exc, now)
        return [_scaled_event(change, ref.scale_down)]

    def _workload_selecting(self, raw: dict[str, Any]) -> Selecting | None:
        """A workloadRef Rollout as :mod:`controller.core.overlap` sees it: its own
        selector or its Deployment's, and the Deployment's pod labels (None, selecting
        nothing, while the Deployment is not in the cache)."""
        spec = raw.get("spec") or {}
        ref = spec.get("workloadRef") or {}
        namespace = (raw.get("metadata") or {}).get("namespace") or ""
        found = self._deployment(namespace, str(ref.get("name")), cached_only=True)
        if found is None:
            return None
        template = wl.pod_template(found)
        selector = spec.get("selector") or dict(found.selector)
        return _selecting({**raw, "spec": {**spec, "selector": selector, "template": template}})

    def _invalid(self, raw: dict[str, Any], exc: ValidationError, now: dt.datetime) -> None:
        self._report_invalid(raw, [f"{f}: {r}" for f, r in problems_of(exc)], now)

    def _report_invalid(self, raw: dict[str, Any], problems: list[str], now: dt.datetime) -> None:
        try:
            current = RolloutStatus.model_validate(raw.get("status") or {})
        except ValidationError:
            current = RolloutStatus()
        status = invalid_spec(current, problems, now)
        log.warning("invalid spec", problems=problems)
        if status != current:
            self._write_status(raw, status)
            self.kube.emit_event(raw, Event("InvalidSpec", status.message, "Warning"), now)

    def _finalize(self, raw: dict[str, Any], rollout: Rollout, router: Router | None) -> None:
        """The Rollout is being deleted: traffic back to stable (see
        :mod:`controller.core.finalize`), then let it go."""
        traffic = router.observe() if router is not None else None
        for action in finalize_actions(traffic):
            self._apply(raw, action, router)
        if traffic is not None:
            log.info("traffic restored to stable before deletion", problem=traffic.problem)
        self.kube.set_finalizer(raw, present=False)


def _rollback_seconds(
    before: RolloutStatus, after: RolloutStatus, restored: dt.datetime
) -> float | None:
    """Seconds from the start of the first failing measurement's window
    (:func:`controller.core.record.failure_window_start`) to ``restored`` (all traffic
    back on stable), when this pass took the last traffic away from a canary that
    analysis failed."""
    abort = after.abort
    if abort is None or abort.reason != "AnalysisFailed":
        return None
    if not (before.canary_weight > 0 and after.canary_weight == 0):
        return None
    start = failure_window_start(after, abort.revision)
    if start is None:
        return None
    return max(0.0, (restored - start).total_seconds())


def _analyses(rollout: Rollout) -> list[RolloutAnalysis]:
    return rollout.spec.strategy.analyses()


def _scaled_event(change: wl.ScaleDeployment, mode: str) -> Event:
    """The event of a workloadRef Deployment scaled by ``scaleDown: mode``."""
    message = (
        f"Deployment {change.name} scaled from {change.previous} to {change.replicas} "
        f"replicas (spec.workloadRef.scaleDown: {mode})"
    )
    if change.done:
        message += "; the Rollout is Healthy, so the Deployment's scale-down is done"
    return Event("DeploymentScaledDown", message)


def _fields(action: Action | wl.ScaleDeployment) -> dict[str, Any]:
    """What the log line of an action carries: its fields, but no tuple (label sets)."""
    return {k: v for k, v in vars(action).items() if not isinstance(v, tuple)}


def _selecting(raw: dict[str, Any]) -> Selecting | None:
    """A stored Rollout as :mod:`controller.core.overlap` sees it (None when its selector,
    labels or creation time do not parse)."""
    meta, spec = raw.get("metadata") or {}, raw.get("spec") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    try:
        selector = LabelSelector.model_validate(spec.get("selector") or {})
        created = meta.get("creationTimestamp")
        when = dt.datetime.fromisoformat(created) if isinstance(created, str) else None
    except (ValidationError, ValueError):
        return None
    if not isinstance(labels, dict):
        return None
    return Selecting(str(meta.get("name")), when, selector, labels)
