"""What every router shares: reading its objects, the guarded write, and read failures.

A router module holds only what is specific to its API: the pure functions that read a
weight (and header routes) from its objects and compute the JSON Patch operations of a
write, and a class built on :class:`RouterBase` that says which objects to read and
which operations to send. Everything below is the same for every router:

- **Reads.** :meth:`RouterBase._read` returns an object, or None when it is absent;
  ``cached`` reads (``observe``) go through :class:`~controller.adapters.traffic.reads.Reads`
  (a watch cache in the controller), the others (a write's fresh view) are GETs. A 404
  for the URL rather than for the object (the kind is not served) raises
  :class:`NotServedError`, whose message says which CRDs to install.
- **Read failures.** An ``observe`` that cannot read reports the weight the Rollout last
  recorded, with the problem (:meth:`RouterBase._unreadable`): the plan then holds
  traffic where it is and keeps the canary's pods for it, whatever router it is.
- **Guarded writes.** :meth:`RouterBase._patch` sends a JSON Patch whose first operation
  tests ``/metadata/resourceVersion`` against the object the operations were computed
  from. A failed test is a 422 like a validation error; a re-read tells them apart, and
  an object that did change raises :class:`MovedError`. :meth:`RouterBase._retrying`
  runs a read-compute-patch round again on :class:`MovedError` (``WRITE_ATTEMPTS``
  times, then :class:`~controller.errors.ConflictError` for the work queue), so nobody
  else's edit is ever overwritten. ``fence()`` runs before every write (it raises once
  leadership is lost), and every request goes through
  :func:`~controller.adapters.retry.call_api`.
- **Verification.** After a write, :meth:`RouterBase._verified` reads the object again
  and hands it to :meth:`Reads.wrote`, so the next ``observe`` sees what was written even
  before the watch delivers it; the router then checks its weight or header route.
- **Services.** :meth:`RouterBase._services_problem` names the first Service of a role
  that does not exist (the canary Service, a separate root Service).
- **Targets.** Each router's frozen ``Target`` (what it reads of the Rollout, built by
  ``Target.of``) is a :class:`RouterTarget`, or a :class:`ServicesTarget` when both
  Services are required; :func:`routing_of` and :func:`services_of` read the Rollout's
  routing block and Services the same way for every router.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Generic, Self, TypeVar

import structlog
from kubernetes import client

from controller.adapters.kube import FIELD_MANAGER
from controller.adapters.retry import call_api
from controller.adapters.traffic.reads import DirectReads, Kind, Obj, Reads
from controller.api.rollout import (
    CanaryStrategy,
    Rollout,
    RolloutStatus,
    RouteMatch,
    TrafficRouting,
)
from controller.core.model import TrafficState, Weights
from controller.errors import ApiError, ConflictError, InvalidError, NotFoundError

log = structlog.get_logger()

HEADER_ROUTE_PREFIX: Final = "stepwise-"
"""Names of Stepwise's header routes (rules, HTTP routes) start with this."""
WRITE_ATTEMPTS: Final = 5
"""Read-compute-patch rounds before a write gives up on a busy object."""
JSON_PATCH: Final = "application/json-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"

Op = dict[str, Any]
Fence = Callable[[], None]
R = TypeVar("R")


class MovedError(ConflictError):
    """The object changed between our read and our write: read again and recompute."""


class NotServedError(ApiError):
    """The object's kind is not served by the API server (its CRDs are not installed)."""


def header_route_name(name: str) -> str:
    """The name of header route ``name`` in a router object."""
    return f"{HEADER_ROUTE_PREFIX}{name}"


def resource_version(obj: Obj) -> str:
    """The resourceVersion an object was read at."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def experiment_port(ports: tuple[int, ...], stable_port: Any) -> Any:
    """The port to reach an experiment Service on, beside a destination to the stable one
    on ``stable_port``: the same port when the Service has it (or has no ports known),
    else the Service's first port (its pods' container port: the stable Service may map
    80 to it, the experiment's Service does not)."""
    if not ports or stable_port in ports:
        return stable_port
    return ports[0]


def stable_share(weight: int, extra: Weights) -> int:
    """The stable's percent when the canary gets ``weight`` and each experiment Service
    of ``extra`` its percent (below 0 when they add up to more than 100)."""
    return 100 - weight - sum(w for _, w in extra)


def guarded(version: str, ops: list[Op]) -> list[Op]:
    """``ops`` after a test of the resourceVersion they were computed from."""
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, *ops]


# -- what a router reads of its Rollout ---------------------------------------------------


def routing_of(
    rollout: Rollout, pick: Callable[[TrafficRouting], R | None], router: str
) -> tuple[CanaryStrategy, R]:
    """The canary strategy and its ``trafficRouting`` block that ``pick`` selects;
    ValueError when the Rollout does not route with ``router``."""
    canary = rollout.spec.strategy.require_canary()
    routing = pick(canary.traffic_routing) if canary.traffic_routing else None
    if routing is None:
        raise ValueError(f"the Rollout does not route with {router}")
    return canary, routing


def services_of(canary: CanaryStrategy, router: str) -> tuple[str, str]:
    """The stable and canary Services; ValueError when the Rollout lacks either."""
    if not canary.stable_service or not canary.canary_service:
        raise ValueError(f"routing with {router} needs stableService and canaryService")
    return canary.stable_service, canary.canary_service


@dataclass(frozen=True)
class RouterTarget:
    """What every router's ``Target`` holds: the Rollout's namespace and the Services
    of its weighted experiment templates."""

    namespace: str
    experiments: frozenset[str] = field(default=frozenset(), kw_only=True)
    """Services of weighted experiment templates: the router object's destinations to
    them are Stepwise's (:func:`controller.core.experiment.routed_services`)."""

    @classmethod
    def of(cls, rollout: Rollout) -> Self:
        """The target of a Rollout that routes with this router; ValueError when it does
        not (each router's ``Target`` implements it)."""
        raise NotImplementedError

    @property
    def objects(self) -> str:
        """What the router reads, as a problem names it when it cannot."""
        raise NotImplementedError

    def with_experiments(self, extra: Weights) -> Self:
        """This target, owning the destinations to the Services of ``extra`` too (a
        weight write that adds or removes them)."""
        return replace(self, experiments=self.experiments | {name for name, _ in extra})


@dataclass(frozen=True)
class ServicesTarget(RouterTarget):
    """The target of a router that needs both the stable and the canary Service."""

    stable_service: str
    canary_service: str


TargetT = TypeVar("TargetT", bound=RouterTarget)


class RouterBase(Generic[TargetT]):
    """The I/O every router does the same way, for one Rollout (see the module
    docstring). Subclasses implement the
    :class:`~controller.adapters.traffic.Router` protocol with it."""

    name: str = "router"
    """The router's name in logs (``istio``, ``gatewayAPI`` ...)."""
    target_type: type[TargetT]
    """The router's ``Target``: what it reads of the Rollout (``Target.of`` raises
    ValueError when the Rollout does not route with this router)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        rollout: Rollout,
        fence: Fence,
        reads: Reads | None = None,
    ) -> None:
        if not rollout.metadata.namespace:
            raise ValueError(f"{type(self).__name__} needs the Rollout's namespace")
        self.rollout = rollout
        self.namespace = rollout.metadata.namespace
        self._custom = client.CustomObjectsApi(api_client)
        self._reads = reads or DirectReads(api_client)
        self._fence = fence
        self.decided: RolloutStatus | None = None
        """The status this pass decided (:meth:`planned`), None until it is told."""
        self.target: TargetT = self.target_type.of(rollout)

    def observe(self) -> TrafficState:
        """What the router object does now (:meth:`_observe`); when it cannot be read,
        the weight the Rollout last recorded and the problem, never an exception."""
        try:
            return self._observe()
        except ApiError as err:
            return self._unreadable(err)

    def _observe(self) -> TrafficState:
        """What the router object does now, from the cached reads; raises
        :class:`~controller.errors.ApiError` when it cannot be read."""
        raise NotImplementedError

    def planned(self, status: RolloutStatus) -> None:
        """Remember the status this pass decided (the revisions a write routes to)."""
        self.decided = status

    def set_mirror_route(self, name: str, match: tuple[RouteMatch, ...], percentage: int) -> None:
        """Refuse: only routers that override this can mirror (the API refuses
        ``setMirrorRoute`` with any other router)."""
        raise RuntimeError(f"the {self.name} router cannot mirror requests (route {name})")

    # -- reading ----------------------------------------------------------------------

    def _read(self, kind: Kind, name: str, *, cached: bool = False) -> Obj | None:
        """The object, or None when it is absent: from the reads (``cached``, for
        ``observe``) or a GET (a write's fresh view). Raises :class:`NotServedError` when
        the kind is not served, and :class:`~controller.errors.ApiError` on other failures."""
        ns = self.namespace
        try:
            if cached:
                return self._reads.get(kind, ns, name)
            found = call_api(
                lambda: self._custom.get_namespaced_custom_object(
                    kind.group, kind.version, ns, kind.plural, name
                )
            )
        except NotFoundError as err:
            if err.reason != "NotFound":  # a 404 for the URL, not about the object
                raise NotServedError(
                    f"the {kind.plural}.{kind.group}/{kind.version} API is not served; "
                    f"install its CRDs (reading {name}: {err})"
                ) from err
            return None
        assert isinstance(found, dict)
        return found

    def _unreadable(self, err: ApiError) -> TrafficState:
        """What ``observe`` reports when it cannot read: the weight the Rollout last
        recorded, and the problem (the plan holds traffic where it is)."""
        if isinstance(err, NotServedError):
            return TrafficState(canary_weight=self.rollout.status.canary_weight, problem=str(err))
        return TrafficState(
            canary_weight=self.rollout.status.canary_weight,
            problem=f"cannot read {self.target.objects}: {err}",
        )

    def _service_exists(self, name: str) -> bool:
        """Whether Service ``name`` exists (from the reads)."""
        try:
            self._reads.service(self.namespace, name)
        except NotFoundError:
            return False
        return True

    def _experiment_ports(self, extra: Weights) -> dict[str, tuple[int, ...]]:
        """The ports of each experiment Service that ``extra`` gives traffic to. Raises
        :class:`~controller.errors.ConflictError` naming one that does not exist: no
        route is ever written to a missing Service (the pass is retried)."""
        out: dict[str, tuple[int, ...]] = {}
        for name, weight in extra:
            if not weight:
                continue
            try:
                service = self._reads.service(self.namespace, name)
            except NotFoundError as err:
                raise ConflictError(
                    f"experiment Service {name} does not exist in {self.namespace}; no "
                    "traffic is routed to it"
                ) from err
            spec = service.spec
            out[name] = tuple(p.port for p in (spec.ports if spec else None) or [] if p.port)
        return out

    def _services_problem(self, services: Mapping[str, str], consequence: str) -> str | None:
        """The first of ``services`` (role -> name) that does not exist or cannot be
        read, as a problem ending in ``consequence``; None when all exist."""
        for role, service in services.items():
            try:
                self._reads.service(self.namespace, service)
            except NotFoundError:
                return f"{role} Service {service} does not exist; {consequence}"
            except ApiError as err:
                return f"cannot read {role} Service {service}: {err}"
        return None

    def _with_services(
        self, state: TrafficState, services: Mapping[str, str], consequence: str
    ) -> TrafficState:
        """``state``, with the first of ``services`` that does not exist as its problem
        (:meth:`_services_problem`) when it has none of its own."""
        if state.problem:
            return state
        return replace(state, problem=self._services_problem(services, consequence))

    # -- writing ----------------------------------------------------------------------

    def _patch(self, kind: Kind, name: str, current: Obj, ops: list[Op]) -> None:
        """``ops`` as one JSON Patch guarded by ``current``'s resourceVersion. Raises
        :class:`MovedError` when the object changed (or went) meanwhile; a rejection of
        the change itself is raised as it came."""
        version = resource_version(current)
        try:
            self._send(kind, name, guarded(version, ops), JSON_PATCH)
        except NotFoundError as err:
            raise MovedError(f"{kind.plural} {name} was deleted meanwhile") from err
        except (InvalidError, ConflictError) as err:
            # A failed test operation is a 422 too: tell it from a real rejection.
            now = self._read(kind, name)
            if now is None or resource_version(now) != version:
                raise MovedError(f"{kind.plural} {name} changed meanwhile") from err
            raise
        log.debug("router object patched", router=self.name, kind=kind.plural, name=name, ops=ops)

    def _create(self, kind: Kind, body: Obj) -> None:
        """Create an object (raises :class:`~controller.errors.ConflictError` if it
        exists already)."""
        ns = self.namespace
        self._fence()
        call_api(
            lambda: self._custom.create_namespaced_custom_object(
                kind.group, kind.version, ns, kind.plural, body
            )
        )

    def _apply(self, kind: Kind, name: str, body: Obj) -> None:
        """Server-side apply of a whole object Stepwise owns (``force``)."""
        self._send(kind, name, body, APPLY_PATCH, force=True)

    def _send(
        self, kind: Kind, name: str, body: Any, content_type: str, *, force: bool = False
    ) -> None:
        """One PATCH of ``name`` as Stepwise's field manager, after the fence."""
        ns = self.namespace
        extra: dict[str, Any] = {"force": True} if force else {}
        self._fence()
        call_api(
            lambda: self._custom.patch_namespaced_custom_object(
                kind.group,
                kind.version,
                ns,
                kind.plural,
                name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=content_type,
                **extra,
            )
        )

    def _retrying(self, what: str, attempt: Callable[[], None]) -> None:
        """Run one read-compute-write round, again while another actor's write moved the
        object under it; :class:`~controller.errors.ConflictError` after
        ``WRITE_ATTEMPTS`` rounds."""
        last: MovedError | None = None
        for number in range(1, WRITE_ATTEMPTS + 1):
            try:
                attempt()
                return
            except MovedError as err:
                last = err
                log.info(
                    "router object changed during our write; reading it again",
                    router=self.name,
                    write=what,
                    attempt=number,
                    error=str(err),
                )
        raise ConflictError(f"{what} not written after {WRITE_ATTEMPTS} attempts: {last}")

    def _verified(self, kind: Kind, name: str) -> Obj | None:
        """A fresh read after a write, remembered for the next ``observe``."""
        found = self._read(kind, name)
        if found is not None:
            self._reads.wrote(kind, found)
        return found

    @staticmethod
    def _check_weight(
        what: str, weight: int, extra: Weights, read: tuple[int, str | None], held: Weights
    ) -> None:
        """Raise :class:`~controller.errors.ConflictError` unless the fresh read after a
        weight write (``read``: the canary weight and any problem, ``held``: the
        experiment Services' weights) shows ``weight`` and ``extra``."""
        got, problem = read
        found = dict(held)
        if problem or got != weight or any(found.get(n, 0) != w for n, w in extra):
            also = f" (experiment weights {found} for {dict(extra)})" if extra else ""
            raise ConflictError(
                f"{what} holds canary weight {got}% after {weight}% was written{also}"
                f"{f' ({problem})' if problem else ''}"
            )
