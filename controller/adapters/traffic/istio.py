"""Istio router: the stable and canary weights of the HTTP routes of a VirtualService.

Where it sits: ``registry`` builds an :class:`IstioRouter` for a Rollout with
``trafficRouting.istio`` on every reconcile; the reconciler calls :meth:`observe` each
pass and the other methods when ``core.plan`` returns SetWeight, SetHeaderRoute or
RemoveHeaderRoute (and on deletion, through the finalizer). The patch computation is
pure functions on plain dicts (:func:`read_state`, :func:`weight_ops`,
:func:`header_route_ops`, :func:`subset_label_ops`); the class only reads, patches and
verifies.

**Managed routes.** The HTTP routes named in ``virtualService.routes``, or by default
every HTTP route (other than Stepwise's own header routes) with a destination whose
host is *the routed host*: the stable Service (short name, ``svc.ns``, ``svc.ns.svc`` or
``svc.ns.svc.cluster.local``), or in subset mode the DestinationRule's host.

**By Service** (no ``destinationRule``): in each managed route the destination whose
host is the stable Service gets ``100 - w`` and the one whose host is the canary Service
gets ``w``; a missing canary destination is added with the stable one's port. At weight
0 the canary destination stays, with weight 0 (no traffic; nothing to re-add next time).

**By subset** (``destinationRule``): one host, destinations ``stableSubsetName`` and
``canarySubsetName``. The host is the DestinationRule's ``spec.host``, and it must not
be the stable or canary Service: Stepwise pins those Services' selectors to one revision
each, so a canary subset of the stable Service would have no endpoints. Stepwise owns
the ``stepwise.dev/revision`` label of the two subsets, and every write (weight or header
route) first brings them to the revisions the stable and canary Services are pinned to,
read at that moment (``rollout.status`` from construction only while a Service is not
pinned yet). The status the router was built from is one pass old exactly when it
matters: in one pass the plan promotes, pins the stable Service to the new revision and
moves traffic back to the stable subset, and a stable subset still naming the old
revision would lose all traffic once the old ReplicaSet scales down. In this mode the
observed canary weight is the share of traffic that does not reach the stable revision,
so a stale stable subset (a DestinationRule edited by hand, or subsets Stepwise has not
labelled yet) reads as a weight that the plan moves back to 0, which relabels them.

**Header routes.** ``set_header_route(name, ...)`` inserts an HTTP route named
``stepwise-<name>`` just before the first managed route, matching the headers and sending
everything to the canary; ``remove_header_route`` deletes it.

**Writes.** The guarded JSON Patch of :mod:`controller.adapters.traffic.base`, with
operations on the owned paths only (one destination's weight, one added destination, one
inserted or removed route, one subset label), then a fresh read that must show the
weight (or header route). Server-side apply cannot do this here: ``spec.http`` and its
``route`` lists are atomic lists (no merge keys, in Istio's real CRD as in ours), so
applying our routes would take ownership of the whole list and write back our copy of
every route another team owns.

**Problems.** :meth:`observe` never raises: a missing VirtualService or DestinationRule,
no route to the routed host, routes that disagree, a destination Stepwise cannot account
for, or a missing canary Service are a ``TrafficState.problem`` (the plan holds traffic
and says why), and a Warning event is recorded on the Rollout once per distinct problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from controller.adapters.kube import REVISION_LABEL
from controller.adapters.traffic.base import (
    HEADER_ROUTE_PREFIX,
    Op,
    RouterBase,
    header_route_name,
)
from controller.adapters.traffic.reads import Kind, Obj
from controller.api.rollout import HeaderMatch, Rollout
from controller.core.model import TrafficState
from controller.errors import ApiError, ConflictError, NotFoundError

log = structlog.get_logger()

GROUP: Final = "networking.istio.io"
VERSION: Final = "v1"
VIRTUAL_SERVICES: Final = "virtualservices"
DESTINATION_RULES: Final = "destinationrules"
CLUSTER_DOMAIN: Final = "cluster.local"


# -- what the Rollout asks for ---------------------------------------------------------


@dataclass(frozen=True)
class Subsets:
    """Subset routing: the DestinationRule and its two subsets."""

    rule: str
    stable: str
    canary: str


@dataclass(frozen=True)
class Target:
    """The Istio objects and names one Rollout routes with."""

    namespace: str
    virtual_service: str
    stable_service: str
    canary_service: str
    routes: tuple[str, ...] | None = None
    """Names of the managed HTTP routes; None: every route to the routed host."""
    subsets: Subsets | None = None

    @classmethod
    def of(cls, rollout: Rollout) -> Target:
        """The target of a Rollout with ``trafficRouting.istio``."""
        canary = rollout.spec.strategy.require_canary()
        routing = canary.traffic_routing.istio if canary.traffic_routing else None
        if routing is None or canary.stable_service is None or canary.canary_service is None:
            raise ValueError("the Rollout does not route with Istio")
        rule = routing.destination_rule
        return cls(
            namespace=rollout.metadata.namespace or "default",
            virtual_service=routing.virtual_service.name,
            stable_service=canary.stable_service,
            canary_service=canary.canary_service,
            routes=tuple(routing.virtual_service.routes)
            if routing.virtual_service.routes is not None
            else None,
            subsets=Subsets(rule.name, rule.stable_subset_name, rule.canary_subset_name)
            if rule is not None
            else None,
        )


@dataclass(frozen=True)
class World:
    """What the router read: the objects (None when missing) and the revisions."""

    virtual_service: Obj | None
    destination_rule: Obj | None = None
    stable_revision: str | None = None
    """The revision the stable subset must select (None: unknown yet)."""
    canary_revision: str | None = None
    """The revision the canary subset must select (None: unknown yet)."""
    canary_service_found: bool = True


class MisfitError(Exception):
    """The objects do not fit what the Rollout asks. Internal: it becomes a
    ``TrafficState.problem`` in :func:`read_state`, or a
    :class:`~controller.errors.ConflictError` in a write (the view was stale)."""


# -- pure reading ----------------------------------------------------------------------


def service_of(host: str, namespace: str) -> str | None:
    """The Service name a destination host means in ``namespace`` (short name,
    ``svc.ns``, ``svc.ns.svc`` or the FQDN), or None for any other host."""
    parts = host.rstrip(".").split(".")
    if len(parts) == 1:
        return parts[0]
    suffix = [namespace, "svc", *CLUSTER_DOMAIN.split(".")]
    if parts[1:] == suffix[: len(parts) - 1]:
        return parts[0]
    return None


def _http(vs: Obj) -> list[Obj]:
    http = (vs.get("spec") or {}).get("http") or []
    return [r if isinstance(r, dict) else {} for r in http]


def _label(route: Obj, index: int) -> str:
    name = route.get("name")
    return repr(name) if name else f"http[{index}]"


@dataclass(frozen=True)
class Managed:
    """One managed HTTP route: its index and its stable and canary destinations."""

    index: int
    name: str
    stable: int
    """Index of the stable destination in ``route``."""
    canary: int | None
    """Index of the canary destination (None: not there yet)."""
    stable_weight: int
    canary_weight: int


def _weights(dests: list[Obj]) -> list[int]:
    if len(dests) == 1:
        return [100]  # a lone destination receives all traffic, whatever its weight
    return [int(d.get("weight") or 0) for d in dests]


def _routed_host(target: Target, dr: Obj | None) -> str:
    """The Service the managed routes reach (stable Service, or the DestinationRule host)."""
    if target.subsets is None:
        return target.stable_service
    assert dr is not None
    host = str((dr.get("spec") or {}).get("host") or "")
    service = service_of(host, target.namespace)
    if service is None:
        raise MisfitError(
            f"DestinationRule {target.subsets.rule} host {host!r} is not a Service in "
            f"namespace {target.namespace}"
        )
    if service in (target.stable_service, target.canary_service):
        raise MisfitError(
            f"DestinationRule {target.subsets.rule} host {host!r} is the "
            f"{'stable' if service == target.stable_service else 'canary'} Service, whose "
            "selector Stepwise pins to one revision, so the other subset would have no "
            "endpoints; use a Service that selects every revision"
        )
    return service


def _reaches(target: Target, host: str, dest: Obj) -> bool:
    """Whether a destination's host is the routed host."""
    destination = dest.get("destination") or {}
    return service_of(str(destination.get("host") or ""), target.namespace) == host


def _classify(target: Target, host: str, dest: Obj) -> str | None:
    """'stable', 'canary', 'host' (the routed host, unknown subset) or None (elsewhere)."""
    destination = dest.get("destination") or {}
    service = service_of(str(destination.get("host") or ""), target.namespace)
    if target.subsets is None:
        if service == target.stable_service:
            return "stable"
        if service == target.canary_service:
            return "canary"
        return None
    if service != host:
        return None
    subset = destination.get("subset")
    if subset == target.subsets.stable:
        return "stable"
    if subset == target.subsets.canary:
        return "canary"
    return "host"


def managed_routes(vs: Obj, target: Target, host: str) -> list[Managed]:
    """The managed HTTP routes of ``vs``; raises :class:`MisfitError` when they do not fit."""
    http = _http(vs)
    name = target.virtual_service
    if target.routes is not None:
        by_name = {r.get("name"): i for i, r in enumerate(http) if r.get("name")}
        indexes = []
        for wanted in target.routes:
            if wanted not in by_name:
                raise MisfitError(f"VirtualService {name} has no HTTP route named {wanted!r}")
            indexes.append(by_name[wanted])
    else:
        indexes = [
            i
            for i, r in enumerate(http)
            if not str(r.get("name") or "").startswith(HEADER_ROUTE_PREFIX)
            and any(_reaches(target, host, d) for d in r.get("route") or [] if isinstance(d, dict))
        ]
        if not indexes:
            raise MisfitError(f"VirtualService {name} has no HTTP route to {host}")
    out = []
    for i in indexes:
        route = http[i]
        label = _label(route, i)
        dests = [d if isinstance(d, dict) else {} for d in route.get("route") or []]
        kinds = [_classify(target, host, d) for d in dests]
        stable_name = (
            f"subset {target.subsets.stable!r} of {host}"
            if target.subsets
            else target.stable_service
        )
        if kinds.count("stable") != 1:
            raise MisfitError(
                f"HTTP route {label} of VirtualService {name} must send to {stable_name} "
                f"exactly once (found {kinds.count('stable')})"
            )
        if kinds.count("canary") > 1:
            raise MisfitError(
                f"HTTP route {label} of VirtualService {name} has two canary destinations"
            )
        others = [
            str((d.get("destination") or {}).get("host"))
            + (f" subset {(d.get('destination') or {}).get('subset')}" if k == "host" else "")
            for d, k in zip(dests, kinds, strict=True)
            if k not in ("stable", "canary")
        ]
        if others:
            raise MisfitError(
                f"HTTP route {label} of VirtualService {name} also sends to "
                f"{', '.join(others)}; Stepwise splits a route only between stable and canary"
            )
        weights = _weights(dests)
        stable = kinds.index("stable")
        canary = kinds.index("canary") if "canary" in kinds else None
        if sum(weights) <= 0:
            raise MisfitError(f"HTTP route {label} of VirtualService {name}: every weight is 0")
        out.append(
            Managed(
                index=i,
                name=label,
                stable=stable,
                canary=canary,
                stable_weight=weights[stable],
                canary_weight=weights[canary] if canary is not None else 0,
            )
        )
    return out


def _subset(dr: Obj, name: str) -> tuple[int, Obj] | None:
    for i, subset in enumerate((dr.get("spec") or {}).get("subsets") or []):
        if isinstance(subset, dict) and subset.get("name") == name:
            return i, subset
    return None


def _subsets(dr: Obj, target: Target) -> tuple[tuple[int, Obj], tuple[int, Obj]]:
    """(index, subset) of the stable and canary subsets; raises :class:`MisfitError`."""
    assert target.subsets is not None
    found = []
    for wanted in (target.subsets.stable, target.subsets.canary):
        subset = _subset(dr, wanted)
        if subset is None:
            raise MisfitError(f"DestinationRule {target.subsets.rule} has no subset {wanted!r}")
        found.append(subset)
    return found[0], found[1]


def _share(managed: Managed) -> int:
    """Percent of a route's traffic the canary destination gets."""
    total = managed.stable_weight + managed.canary_weight
    return round(100 * managed.canary_weight / total)


def _away_from_stable(managed: Managed, dr: Obj, target: Target, world: World) -> int:
    """Subset mode: percent of a route's traffic that misses the stable revision."""
    (_, stable), (_, canary) = _subsets(dr, target)
    want = world.stable_revision
    if want is None:
        return _share(managed)
    total = managed.stable_weight + managed.canary_weight
    away = 0
    for subset, weight in ((stable, managed.stable_weight), (canary, managed.canary_weight)):
        if (subset.get("labels") or {}).get(REVISION_LABEL) != want:
            away += weight
    return round(100 * away / total)


@dataclass(frozen=True)
class Fit:
    """The objects, when they fit: the routed host and the managed routes."""

    virtual_service: Obj
    destination_rule: Obj | None
    host: str
    managed: list[Managed]


def fit(world: World, target: Target) -> Fit:
    """Check the objects against the Rollout; raises :class:`MisfitError`."""
    vs = world.virtual_service
    if vs is None:
        raise MisfitError(
            f"VirtualService {target.virtual_service} not found in {target.namespace}"
        )
    dr = world.destination_rule
    if target.subsets is not None:
        if dr is None:
            raise MisfitError(
                f"DestinationRule {target.subsets.rule} not found in {target.namespace}"
            )
        _subsets(dr, target)
    host = _routed_host(target, dr)
    return Fit(vs, dr, host, managed_routes(vs, target, host))


def header_routes(vs: Obj | None) -> frozenset[str]:
    """Names of Stepwise's header routes in ``vs``."""
    names = (str(r.get("name") or "") for r in _http(vs or {}))
    return frozenset(
        n.removeprefix(HEADER_ROUTE_PREFIX) for n in names if n.startswith(HEADER_ROUTE_PREFIX)
    )


def canary_weight(world: World, target: Target) -> int:
    """The one canary weight of the managed routes; raises :class:`MisfitError` when the
    objects do not fit or the routes disagree."""
    found = fit(world, target)
    dr = found.destination_rule
    if dr is not None:
        shares = {m.name: _away_from_stable(m, dr, target, world) for m in found.managed}
    else:
        shares = {m.name: _share(m) for m in found.managed}
    if len(set(shares.values())) > 1:
        listed = ", ".join(f"{name}={share}" for name, share in shares.items())
        raise MisfitError(
            f"HTTP routes of VirtualService {target.virtual_service} disagree on the canary "
            f"weight ({listed})"
        )
    return next(iter(shares.values()))


def _canary_service_problem(world: World, target: Target) -> str | None:
    if world.canary_service_found or target.subsets is not None:
        return None
    return f"canary Service {target.canary_service} not found"


def read_state(world: World, target: Target, *, fallback_weight: int = 0) -> TrafficState:
    """What the VirtualService does now. ``fallback_weight`` is reported with a problem
    that prevents reading a single weight (the last weight the Rollout recorded)."""
    routes = header_routes(world.virtual_service)
    try:
        weight = canary_weight(world, target)
    except MisfitError as misfit:
        weight = 0 if world.virtual_service is None else fallback_weight
        return TrafficState(canary_weight=weight, header_routes=routes, problem=str(misfit))
    problem = _canary_service_problem(world, target)
    return TrafficState(canary_weight=weight, header_routes=routes, problem=problem)


# -- pure patch computation ------------------------------------------------------------


def _pointer(*parts: object) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _canary_destination(target: Target, stable_dest: Obj) -> Obj:
    """The canary destination beside a stable one: same port, and the canary Service
    named the way the stable one is (host mode) or the canary subset (subset mode)."""
    stable = dict(stable_dest.get("destination") or {})
    dest: Obj = {}
    if target.subsets is None:
        host = str(stable.get("host") or target.stable_service)
        dest["host"] = target.canary_service + host[len(target.stable_service) :]
    else:
        dest["host"] = stable.get("host")
        dest["subset"] = target.subsets.canary
    if "port" in stable:
        dest["port"] = stable["port"]
    return dest


def weight_ops(world: World, target: Target, weight: int) -> list[Op]:
    """JSON Patch operations (without the resourceVersion test) that give the canary
    ``weight`` percent in every managed route; [] when that already holds. Raises
    :class:`MisfitError` when the VirtualService does not fit."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is not within 0..100")
    found = fit(world, target)
    missing = _canary_service_problem(world, target)
    if weight > 0 and missing is not None:
        raise MisfitError(missing)  # traffic to a host that does not exist would fail
    http = _http(found.virtual_service)
    ops: list[Op] = []
    for m in found.managed:
        dests = http[m.index]["route"]
        if m.canary is None:
            if weight == 0:
                continue  # nothing goes to a canary that is not there
            ops.append(
                {
                    "op": "add",
                    "path": _pointer("spec", "http", m.index, "route", "-"),
                    "value": {
                        "destination": _canary_destination(target, dests[m.stable]),
                        "weight": weight,
                    },
                }
            )
        elif dests[m.canary].get("weight") != weight:
            path = _pointer("spec", "http", m.index, "route", m.canary, "weight")
            ops.append({"op": "add", "path": path, "value": weight})
        if dests[m.stable].get("weight") != 100 - weight:
            path = _pointer("spec", "http", m.index, "route", m.stable, "weight")
            ops.append({"op": "add", "path": path, "value": 100 - weight})
    return ops


def header_route(target: Target, world: World, name: str, match: Sequence[HeaderMatch]) -> Obj:
    """The HTTP route that sends requests matching all ``match`` headers to the canary."""
    found = fit(world, target)
    first = found.managed[0]
    stable_dest = _http(found.virtual_service)[first.index]["route"][first.stable]
    headers: Obj = {}
    for m in match:
        value = m.header_value
        kind = (
            "exact"
            if value.exact is not None
            else "prefix"
            if value.prefix is not None
            else "regex"
        )
        # Istio requires lowercase header names (HTTP header names ignore case anyway).
        headers[m.header_name.lower()] = {kind: getattr(value, kind)}
    return {
        "name": header_route_name(name),
        "match": [{"headers": headers}],
        "route": [{"destination": _canary_destination(target, stable_dest)}],
    }


def header_route_ops(
    world: World, target: Target, name: str, match: Sequence[HeaderMatch]
) -> list[Op]:
    """Operations that put the header route just before the first managed route (or
    replace it); [] when it is already there as wanted."""
    wanted = header_route(target, world, name, match)
    found = fit(world, target)
    http = _http(found.virtual_service)
    first = min(m.index for m in found.managed)
    existing = next((i for i, r in enumerate(http) if r.get("name") == wanted["name"]), None)
    if existing is not None and existing < first:
        if http[existing] == wanted:
            return []
        return [{"op": "replace", "path": _pointer("spec", "http", existing), "value": wanted}]
    ops: list[Op] = []
    if existing is not None:  # after a managed route: it would never match; move it
        ops.append({"op": "remove", "path": _pointer("spec", "http", existing)})
    ops.append({"op": "add", "path": _pointer("spec", "http", first), "value": wanted})
    return ops


def remove_header_route_ops(vs: Obj | None, name: str) -> list[Op]:
    """Operations that delete the header route ``name`` ([] when it is absent)."""
    route_name = header_route_name(name)
    ops: list[Op] = []
    # Highest index first, so earlier removals do not shift later ones.
    for i, route in reversed(list(enumerate(_http(vs or {})))):
        if route.get("name") == route_name:
            ops.append({"op": "remove", "path": _pointer("spec", "http", i)})
    return ops


def subset_label_ops(world: World, target: Target) -> list[Op]:
    """Operations that make the stable and canary subsets select their revisions ([]
    outside subset mode, when they already do, or while a revision is unknown)."""
    if target.subsets is None or world.destination_rule is None:
        return []
    dr = world.destination_rule
    (si, stable), (ci, canary) = _subsets(dr, target)
    ops: list[Op] = []
    for index, subset, revision in (
        (si, stable, world.stable_revision),
        (ci, canary, world.canary_revision),
    ):
        if revision is None:
            continue
        labels = subset.get("labels")
        if not isinstance(labels, dict):
            path = _pointer("spec", "subsets", index, "labels")
            ops.append({"op": "add", "path": path, "value": {REVISION_LABEL: revision}})
        elif labels.get(REVISION_LABEL) != revision:
            path = _pointer("spec", "subsets", index, "labels", REVISION_LABEL)
            ops.append({"op": "add", "path": path, "value": revision})
    return ops


# -- the router ------------------------------------------------------------------------

VS_KIND: Final = Kind(GROUP, VERSION, VIRTUAL_SERVICES)
DR_KIND: Final = Kind(GROUP, VERSION, DESTINATION_RULES)


class IstioRouter(RouterBase):
    """Routes one Rollout's traffic with an Istio VirtualService (and DestinationRule)."""

    name = "istio"

    def setup(self, rollout: Rollout) -> None:
        """The routing fields of the Rollout."""
        self.target = Target.of(rollout)

    # -- the protocol -----------------------------------------------------------------

    def observe(self) -> TrafficState:
        """The canary weight and header routes the VirtualService holds now (a problem,
        never an exception, when it cannot be read or does not fit)."""
        try:
            world = self._world(cached=True)
        except ApiError as err:
            return self._unreadable("the Istio routing objects", err)
        return read_state(world, self.target, fallback_weight=self.rollout.status.canary_weight)

    def set_weight(self, weight: int) -> None:
        """Send ``weight`` percent of every managed route to the canary, then verify."""
        self._write(lambda world: weight_ops(world, self.target, weight), f"canary weight {weight}")

        def holds(world: World) -> str | None:
            written = canary_weight(world, self.target)
            if written == weight:
                return None
            return f"the canary weight reads {written} after writing {weight}"

        self._verify(holds)
        log.info(
            "traffic weight set",
            router=self.name,
            virtual_service=self.target.virtual_service,
            weight=weight,
        )

    def set_header_route(self, name: str, match: tuple[HeaderMatch, ...]) -> None:
        """Insert (or replace) the header route ``stepwise-<name>`` to the canary."""
        self._write(
            lambda world: header_route_ops(world, self.target, name, match), f"header route {name}"
        )

        def holds(world: World) -> str | None:
            wanted = header_route(self.target, world, name, match)
            if any(r == wanted for r in _http(world.virtual_service or {})):
                return None
            return f"header route {header_route_name(name)} is not as written"

        self._verify(holds)
        log.info("header route set", router=self.name, route=header_route_name(name))

    def remove_header_route(self, name: str) -> None:
        """Delete the header route ``stepwise-<name>`` (nothing to do when it is absent)."""
        self._write(
            lambda world: remove_header_route_ops(world.virtual_service, name),
            f"removal of header route {name}",
            require_fit=False,
        )

        def holds(world: World) -> str | None:
            if name not in header_routes(world.virtual_service):
                return None
            return f"header route {header_route_name(name)} is still there after its removal"

        self._verify(holds)
        log.info("header route removed", router=self.name, route=header_route_name(name))

    def _verify(self, holds: Callable[[World], str | None]) -> None:
        """Read the objects again; :class:`ConflictError` when the write does not hold."""
        t = self.target
        world = self._world(verified=True)
        try:
            failure = holds(world)
        except MisfitError as misfit:
            failure = str(misfit)
        if failure is not None:
            raise ConflictError(f"VirtualService {t.virtual_service}: {failure}")

    # -- reading ----------------------------------------------------------------------

    def _pinned(self, service: str) -> tuple[bool, str | None]:
        """(exists, the revision its selector is pinned to)."""
        try:
            svc = self._reads.service(self.namespace, service)
        except NotFoundError:
            return False, None
        selector = (svc.spec.selector if svc.spec else None) or {}
        return True, selector.get(REVISION_LABEL)

    def _world(self, *, cached: bool = False, verified: bool = False) -> World:
        """The objects as cached (observe), as they are (a write's fresh view), or as
        they are after a write (``verified``: remembered for the next observe)."""
        t = self.target

        def read(kind: Kind, name: str) -> Obj | None:
            return self._verified(kind, name) if verified else self._read(kind, name, cached=cached)

        vs = read(VS_KIND, t.virtual_service)
        dr = read(DR_KIND, t.subsets.rule) if t.subsets else None
        _, stable = self._pinned(t.stable_service)
        canary_found, canary = self._pinned(t.canary_service)
        status = self.rollout.status
        return World(
            virtual_service=vs,
            destination_rule=dr,
            stable_revision=stable or status.stable_revision,
            canary_revision=canary or status.canary_revision,
            canary_service_found=canary_found,
        )

    # -- writing ----------------------------------------------------------------------

    def _write(
        self, compute: Callable[[World], list[Op]], what: str, *, require_fit: bool = True
    ) -> None:
        """Read, compute, patch (subset labels first, then the VirtualService) under a
        resourceVersion test; re-read and recompute when someone else wrote meanwhile."""
        t = self.target

        def attempt() -> None:
            world = self._world()
            try:
                label_ops = self._label_ops(world, require_fit=require_fit)
                vs_ops = compute(world)
            except MisfitError as misfit:
                # The objects changed since observe(): a stale view, decided again next pass.
                raise ConflictError(f"{what} not written: {misfit}") from misfit
            if label_ops and world.destination_rule is not None and t.subsets:
                self._patch(DR_KIND, t.subsets.rule, world.destination_rule, label_ops)
            if vs_ops and world.virtual_service is not None:
                self._patch(VS_KIND, t.virtual_service, world.virtual_service, vs_ops)

        self._retrying(what, attempt)

    def _label_ops(self, world: World, *, require_fit: bool) -> list[Op]:
        """Subset label operations: every write brings the subsets to the revisions the
        Services are pinned to (a header-route removal too, when the objects fit, so a
        promotion that moves no weight still re-points the stable subset)."""
        try:
            fit(world, self.target)
        except MisfitError:
            if require_fit:
                raise
            return []
        return subset_label_ops(world, self.target)
