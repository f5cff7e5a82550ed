"""Istio router: the stable and canary weights of the HTTP, TLS and TCP routes of a
VirtualService.

Where it sits: ``registry`` builds an :class:`IstioRouter` for a Rollout with
``trafficRouting.istio`` on every reconcile; the reconciler calls :meth:`observe` each
pass, :meth:`planned` with the status the pass decided, and the other methods when
``core.plan`` returns SetWeight, SetHeaderRoute, SetMirrorRoute or RemoveHeaderRoute (and
on deletion, through the finalizer). The patch computation is pure functions on plain
dicts (:func:`read_state`, :func:`weight_ops`, :func:`header_route_ops`,
:func:`mirror_route_ops`, :func:`subset_label_ops`); the class only reads, patches and
verifies.

**Managed routes.** The HTTP routes named in ``virtualService.routes``, or by default
every HTTP route (other than Stepwise's own header and mirror routes) with a destination
whose host is *the routed host*: the stable Service (short name, ``svc.ns``,
``svc.ns.svc`` or ``svc.ns.svc.cluster.local``), or in subset mode the DestinationRule's
host. With ``tlsRoutes`` or ``tcpRoutes`` the TLS and TCP routes they select too (Argo
Rollouts' rule: a route whose matches name one port, the selector's, and for TLS
together exactly its SNI hosts); then there may be no HTTP route at all. Every managed
route carries the same weights.

**By Service** (no ``destinationRule``): in each managed route the destination whose
host is the stable Service gets ``100 - w`` and the one whose host is the canary Service
gets ``w``; a missing canary destination is added with the stable one's port. At weight
0 the canary destination stays, with weight 0 (no traffic; nothing to re-add next time).

**Experiment Services** (weighted experiment templates): in both modes a destination by
host per experiment Service (named like the stable's host, on its port or the Service's
own), its weight taken from the stable's, in every managed route; removed when its
weight returns to 0. Only these Services are accepted beside stable and canary.

**By subset** (``destinationRule``): one host, destinations ``stableSubsetName`` and
``canarySubsetName``; ``stableService`` and ``canaryService`` are optional. The host is
the DestinationRule's ``spec.host``, and it must not be the stable or canary Service:
Stepwise pins those Services' selectors to one revision each, so a canary subset of the
stable Service would have no endpoints. Stepwise owns the ``stepwise.dev/revision``
label of the two subsets, and every write (weight or header route) first brings them to
the revisions the stable and canary Services are pinned to, read at that moment, or,
for a role without a Service, to the revision the pass decided (:meth:`planned`;
``rollout.status`` from construction only while neither is known). The status the
router was built from is one pass old exactly when it matters: in one pass the plan
promotes, pins the stable Service (if any) to the new revision and moves traffic back to
the stable subset, and a stable subset still naming the old revision would lose all
traffic once the old ReplicaSet scales down. A write that sends the canary nothing
(weight 0, a route removed) relabels the canary subset only after the VirtualService: a
superseded canary keeps the subset until no route sends to it. In this mode the
observed canary weight is the share of traffic that does not reach the stable revision,
so a stale stable subset (a DestinationRule edited by hand, or subsets Stepwise has not
labelled yet) reads as a weight that the plan moves back to 0, which relabels them.

**Header and mirror routes.** ``set_header_route(name, ...)`` inserts an HTTP route
named ``stepwise-<name>`` just before the first managed HTTP route, matching the headers
and sending everything to the canary. ``set_mirror_route(name, ...)`` inserts one that
matches the method, path and headers, splits its requests like the managed routes (every
weight write updates it too) and copies ``percentage`` percent of them to the canary
(``mirror``, ``mirrorPercentage``). With ``managedRoutes``, Stepwise's routes stand in
that order (first listed, first matched). ``remove_header_route`` deletes either kind;
the plan removes them all when the rollout is promoted or aborted.

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from controller.adapters.kube import REVISION_LABEL
from controller.adapters.traffic.base import (
    HEADER_ROUTE_PREFIX,
    Op,
    RouterBase,
    RouterTarget,
    experiment_port,
    header_route_name,
    routing_of,
    services_of,
    stable_share,
)
from controller.adapters.traffic.reads import Kind, Obj
from controller.api.rollout import HeaderMatch, Rollout, RouteMatch, StringMatch
from controller.core import experiment
from controller.core.model import TrafficState, Weights
from controller.errors import ConflictError, NotFoundError

log = structlog.get_logger()

VS_KIND: Final = Kind("networking.istio.io", "v1", "virtualservices")
DR_KIND: Final = Kind("networking.istio.io", "v1", "destinationrules")
CLUSTER_DOMAIN: Final = "cluster.local"


# -- what the Rollout asks for ---------------------------------------------------------


@dataclass(frozen=True)
class Subsets:
    """Subset routing: the DestinationRule and its two subsets."""

    rule: str
    stable: str
    canary: str


@dataclass(frozen=True)
class TlsSelector:
    """Selects TLS routes: those whose matches name one port, ``port`` (0: none), and
    together exactly the SNI hosts ``sni_hosts``."""

    port: int = 0
    sni_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Target(RouterTarget):
    """The Istio objects and names one Rollout routes with."""

    virtual_service: str
    stable_service: str | None
    """The stable Service; None only in subset mode."""
    canary_service: str | None
    """The canary Service; None only in subset mode."""
    routes: tuple[str, ...] | None = None
    """Names of the managed HTTP routes; None: every route to the routed host."""
    subsets: Subsets | None = None
    tls: tuple[TlsSelector, ...] = ()
    """Selectors of the managed TLS routes."""
    tcp: tuple[int, ...] = ()
    """Ports of the managed TCP routes (0: routes whose matches name no port)."""
    route_order: tuple[str, ...] | None = None
    """``managedRoutes``: header and mirror route names, highest precedence first."""

    @classmethod
    def of(cls, rollout: Rollout) -> Target:
        """The target of a Rollout with ``trafficRouting.istio``."""
        canary, routing = routing_of(rollout, lambda t: t.istio, "Istio")
        rule = routing.destination_rule
        if rule is None:  # the Services are optional only in subset mode
            services_of(canary, "Istio by Service")
        order = canary.traffic_routing.managed_routes if canary.traffic_routing else None
        service = routing.virtual_service
        return cls(
            namespace=rollout.metadata.namespace or "default",
            virtual_service=service.name,
            stable_service=canary.stable_service,
            canary_service=canary.canary_service,
            routes=tuple(service.routes) if service.routes is not None else None,
            subsets=Subsets(rule.name, rule.stable_subset_name, rule.canary_subset_name)
            if rule is not None
            else None,
            tls=tuple(
                TlsSelector(r.port or 0, frozenset(r.sni_hosts or ()))
                for r in service.tls_routes or ()
            ),
            tcp=tuple(r.port or 0 for r in service.tcp_routes or ()),
            route_order=tuple(r.name for r in order) if order is not None else None,
            experiments=experiment.routed_services(rollout),
        )

    @property
    def objects(self) -> str:
        """What the router reads, as a problem names it when it cannot."""
        return "the Istio routing objects"


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


SECTIONS: Final = ("http", "tls", "tcp")
"""The VirtualService's route lists that carry weights."""


def _routes(vs: Obj, section: str = "http") -> list[Obj]:
    found = (vs.get("spec") or {}).get(section) or []
    return [r if isinstance(r, dict) else {} for r in found]


def _http(vs: Obj) -> list[Obj]:
    return _routes(vs, "http")


def _label(route: Obj, index: int, section: str = "http") -> str:
    name = route.get("name")
    return repr(name) if name else f"{section}[{index}]"


def _own(route: Obj) -> bool:
    """Whether an HTTP route is one of Stepwise's header or mirror routes."""
    return str(route.get("name") or "").startswith(HEADER_ROUTE_PREFIX)


@dataclass(frozen=True)
class Managed:
    """One managed route: its list and index, and its stable and canary destinations."""

    index: int
    name: str
    stable: int
    """Index of the stable destination in ``route``."""
    canary: int | None
    """Index of the canary destination (None: not there yet)."""
    stable_weight: int
    canary_weight: int
    section: str = "http"
    """``http``, ``tls`` or ``tcp``: the list of ``spec`` the route is in."""
    experiments: tuple[tuple[str, int, int], ...] = ()
    """(Service, index, weight) of each destination to an experiment Service."""

    @property
    def total(self) -> int:
        """The weights of the stable, canary and experiment destinations together."""
        return self.stable_weight + self.canary_weight + sum(w for _, _, w in self.experiments)


def _weights(dests: list[Obj]) -> list[int]:
    if len(dests) == 1:
        return [100]  # a lone destination receives all traffic, whatever its weight
    return [int(d.get("weight") or 0) for d in dests]


def _routed_host(target: Target, dr: Obj | None) -> str:
    """The Service the managed routes reach (stable Service, or the DestinationRule host)."""
    if target.subsets is None:
        assert target.stable_service is not None  # Target.of: Services without subsets
        return target.stable_service
    assert dr is not None
    host = str((dr.get("spec") or {}).get("host") or "")
    service = service_of(host, target.namespace)
    if service is None:
        raise MisfitError(
            f"DestinationRule {target.subsets.rule} host {host!r} is not a Service in "
            f"namespace {target.namespace}"
        )
    if service is not None and service in (target.stable_service, target.canary_service):
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
    """'stable', 'canary', 'experiment' (an experiment Service, by host in both modes, as
    Argo Rollouts adds them), 'host' (the routed host, unknown subset) or None
    (elsewhere)."""
    destination = dest.get("destination") or {}
    service = service_of(str(destination.get("host") or ""), target.namespace)
    if service is not None and service in target.experiments and service != host:
        return "experiment"
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


def _ports(route: Obj) -> set[int]:
    """The ports a TLS or TCP route's matches name (0 for a match without a port, and
    for a route without matches)."""
    matches = [m for m in route.get("match") or [] if isinstance(m, dict)]
    return {int(m.get("port") or 0) for m in matches} or {0}


def _tls_fits(route: Obj, selector: TlsSelector) -> bool:
    """Argo Rollouts' rule: the route's matches name one port, the selector's, and
    together exactly the selector's SNI hosts."""
    sni = {
        str(h)
        for m in route.get("match") or []
        if isinstance(m, dict)
        for h in m.get("sniHosts") or []
    }
    return _ports(route) == {selector.port} and sni == selector.sni_hosts


def _selected(vs: Obj, target: Target, host: str) -> list[tuple[str, int]]:
    """(section, index) of every managed route, HTTP first; raises :class:`MisfitError`
    when a named or selected route is missing."""
    name = target.virtual_service
    http = _http(vs)
    out: list[tuple[str, int]] = []
    if target.routes is not None:
        by_name = {r.get("name"): i for i, r in enumerate(http) if r.get("name")}
        for wanted in target.routes:
            if wanted not in by_name:
                raise MisfitError(f"VirtualService {name} has no HTTP route named {wanted!r}")
            out.append(("http", by_name[wanted]))
    else:
        out += [
            ("http", i)
            for i, r in enumerate(http)
            if not _own(r)
            and any(_reaches(target, host, d) for d in r.get("route") or [] if isinstance(d, dict))
        ]
    tls = _routes(vs, "tls")
    for selector in target.tls:
        found = [i for i, r in enumerate(tls) if _tls_fits(r, selector)]
        if not found:
            raise MisfitError(
                f"VirtualService {name} has no TLS route matching port {selector.port or 'none'}"
                f" and SNI hosts {sorted(selector.sni_hosts)}"
            )
        out += [("tls", i) for i in found if ("tls", i) not in out]
    tcp = _routes(vs, "tcp")
    for port in target.tcp:
        found = [i for i, r in enumerate(tcp) if _ports(r) == {port}]
        if not found:
            raise MisfitError(f"VirtualService {name} has no TCP route matching port {port}")
        out += [("tcp", i) for i in found if ("tcp", i) not in out]
    if not out:
        raise MisfitError(f"VirtualService {name} has no HTTP route to {host}")
    return out


def _managed(vs: Obj, target: Target, host: str, section: str, index: int) -> Managed:
    """One route as a :class:`Managed`; raises :class:`MisfitError` when it does not fit."""
    name = target.virtual_service
    route = _routes(vs, section)[index]
    label = _label(route, index, section)
    what = "HTTP" if section == "http" else section.upper()
    dests = [d if isinstance(d, dict) else {} for d in route.get("route") or []]
    kinds = [_classify(target, host, d) for d in dests]
    stable_name = (
        f"subset {target.subsets.stable!r} of {host}" if target.subsets else target.stable_service
    )
    if kinds.count("stable") != 1:
        raise MisfitError(
            f"{what} route {label} of VirtualService {name} must send to {stable_name} "
            f"exactly once (found {kinds.count('stable')})"
        )
    if kinds.count("canary") > 1:
        raise MisfitError(
            f"{what} route {label} of VirtualService {name} has two canary destinations"
        )
    others = [
        str((d.get("destination") or {}).get("host"))
        + (f" subset {(d.get('destination') or {}).get('subset')}" if k == "host" else "")
        for d, k in zip(dests, kinds, strict=True)
        if k not in ("stable", "canary", "experiment")
    ]
    if others:
        raise MisfitError(
            f"{what} route {label} of VirtualService {name} also sends to "
            f"{', '.join(others)}; Stepwise splits a route only between stable and canary"
        )
    weights = _weights(dests)
    stable = kinds.index("stable")
    canary = kinds.index("canary") if "canary" in kinds else None
    if sum(weights) <= 0:
        raise MisfitError(f"{what} route {label} of VirtualService {name}: every weight is 0")
    experiments = tuple(
        (
            service_of(str((d.get("destination") or {}).get("host")), target.namespace) or "",
            j,
            weights[j],
        )
        for j, (d, k) in enumerate(zip(dests, kinds, strict=True))
        if k == "experiment"
    )
    return Managed(
        index=index,
        name=label,
        stable=stable,
        canary=canary,
        stable_weight=weights[stable],
        canary_weight=weights[canary] if canary is not None else 0,
        section=section,
        experiments=experiments,
    )


def managed_routes(vs: Obj, target: Target, host: str) -> list[Managed]:
    """The managed routes of ``vs`` (HTTP, then TLS, then TCP); raises
    :class:`MisfitError` when they do not fit."""
    return [_managed(vs, target, host, sec, i) for sec, i in _selected(vs, target, host)]


def mirror_routes(vs: Obj, target: Target, host: str) -> list[Managed]:
    """Stepwise's mirror routes: they split their requests like the managed routes, so
    every weight write updates them too."""
    return [
        _managed(vs, target, host, "http", i)
        for i, r in enumerate(_http(vs))
        if _own(r) and "mirror" in r
    ]


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
    return round(100 * managed.canary_weight / managed.total)


def _away_from_stable(managed: Managed, dr: Obj, target: Target, world: World) -> int:
    """Subset mode: percent of a route's traffic that misses the stable revision."""
    (_, stable), (_, canary) = _subsets(dr, target)
    want = world.stable_revision
    if want is None:
        return _share(managed)
    away = 0
    for subset, weight in ((stable, managed.stable_weight), (canary, managed.canary_weight)):
        if (subset.get("labels") or {}).get(REVISION_LABEL) != want:
            away += weight
    # Experiment Services miss the stable revision too, but are not the canary's share.
    return round(100 * away / managed.total)


@dataclass(frozen=True)
class Fit:
    """The objects, when they fit: the routed host, the managed routes and Stepwise's
    mirror routes."""

    virtual_service: Obj
    destination_rule: Obj | None
    host: str
    managed: list[Managed]
    mirrors: list[Managed]

    def first_http(self, target: Target) -> Managed:
        """The first managed HTTP route (header and mirror routes go before it)."""
        http = [m for m in self.managed if m.section == "http"]
        if not http:
            raise MisfitError(
                f"VirtualService {target.virtual_service} has no managed HTTP route; header "
                "and mirror routes need one"
            )
        return min(http, key=lambda m: m.index)


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
    return Fit(vs, dr, host, managed_routes(vs, target, host), mirror_routes(vs, target, host))


def header_routes(vs: Obj | None) -> frozenset[str]:
    """Names of Stepwise's header (and mirror) routes in ``vs``."""
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
        what = "HTTP routes" if {m.section for m in found.managed} == {"http"} else "routes"
        raise MisfitError(
            f"{what} of VirtualService {target.virtual_service} disagree on the canary "
            f"weight ({listed})"
        )
    return next(iter(shares.values()))


def extra_weights(world: World, target: Target) -> Weights:
    """The weights of the managed routes' experiment destinations, by Service (the
    highest where routes disagree); raises :class:`MisfitError` when the objects do not
    fit."""
    found: dict[str, int] = {}
    for m in fit(world, target).managed:
        for service, _, weight in m.experiments:
            found[service] = max(weight, found.get(service, 0))
    return tuple(sorted(found.items()))


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
    return TrafficState(
        canary_weight=weight,
        header_routes=routes,
        problem=problem,
        extra_weights=extra_weights(world, target),
    )


# -- pure patch computation ------------------------------------------------------------


def _pointer(*parts: object) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _canary_destination(target: Target, stable_dest: Obj) -> Obj:
    """The canary destination beside a stable one: same port, and the canary Service
    named the way the stable one is (host mode) or the canary subset (subset mode)."""
    stable = dict(stable_dest.get("destination") or {})
    dest: Obj = {}
    if target.subsets is None:
        assert target.stable_service is not None
        assert target.canary_service is not None
        host = str(stable.get("host") or target.stable_service)
        dest["host"] = target.canary_service + host[len(target.stable_service) :]
    else:
        dest["host"] = stable.get("host")
        dest["subset"] = target.subsets.canary
    if "port" in stable:
        dest["port"] = stable["port"]
    return dest


def _experiment_destination(service: str, stable_dest: Obj, ports: tuple[int, ...]) -> Obj:
    """A destination to an experiment Service beside a stable one: its host named the way
    the stable one's is (short name or with the namespace suffix), the same port or the
    one of the Service's ``ports`` (:func:`~controller.adapters.traffic.base.experiment_port`)."""
    stable = dict(stable_dest.get("destination") or {})
    host = str(stable.get("host") or "")
    dest: Obj = {"host": service + (host[host.index(".") :] if "." in host else "")}
    port = stable.get("port")
    if isinstance(port, dict) and "number" in port:
        dest["port"] = {**port, "number": experiment_port(ports, port["number"])}
    elif port is not None:
        dest["port"] = port
    return dest


def weight_ops(
    world: World,
    target: Target,
    weight: int,
    extra: Weights = (),
    ports: Mapping[str, tuple[int, ...]] | None = None,
) -> list[Op]:
    """JSON Patch operations (without the resourceVersion test) that give the canary
    ``weight`` percent in every managed route (HTTP, TLS and TCP) and in Stepwise's
    mirror routes, and each experiment Service of ``extra`` its percent (a destination
    by host, added when missing, removed at 0), the stable the rest; [] when that already
    holds. Raises :class:`MisfitError` when the VirtualService does not fit."""
    rest = stable_share(weight, extra)
    if not 0 <= weight <= 100 or rest < 0:
        raise ValueError(f"weight {weight} and experiment weights {extra} do not fit in 100")
    found = fit(world, target)
    missing = _canary_service_problem(world, target)
    if weight > 0 and missing is not None:
        raise MisfitError(missing)  # traffic to a host that does not exist would fail
    ops: list[Op] = []
    for m in [*found.managed, *found.mirrors]:
        dests = _routes(found.virtual_service, m.section)[m.index]["route"]
        at = ("spec", m.section, m.index, "route")
        if m.canary is None:
            if weight == 0 and not m.experiments and not any(w for _, w in extra):
                continue  # nothing goes to a canary that is not there
            if weight > 0:
                ops.append(
                    {
                        "op": "add",
                        "path": _pointer(*at, "-"),
                        "value": {
                            "destination": _canary_destination(target, dests[m.stable]),
                            "weight": weight,
                        },
                    }
                )
        elif dests[m.canary].get("weight") != weight:
            ops.append({"op": "add", "path": _pointer(*at, m.canary, "weight"), "value": weight})
        if dests[m.stable].get("weight") != rest:
            path = _pointer(*at, m.stable, "weight")
            ops.append({"op": "add", "path": path, "value": rest})
        ops.extend(_experiment_ops(m, dests, at, extra, ports or {}))
    return ops


def _experiment_ops(
    m: Managed,
    dests: list[Obj],
    at: tuple[object, ...],
    extra: Weights,
    ports: Mapping[str, tuple[int, ...]],
) -> list[Op]:
    """The operations on one route's experiment destinations: weights (indices as read),
    then removals from the end, then additions."""
    ops: list[Op] = []
    removes: list[int] = []
    appends: list[Op] = []
    held = {service: j for service, j, _ in m.experiments}
    for service, w in extra:
        if service in held:
            j = held[service]
            if w == 0:
                removes.append(j)
            elif dests[j].get("weight") != w:
                ops.append({"op": "add", "path": _pointer(*at, j, "weight"), "value": w})
        elif w > 0:
            dest = _experiment_destination(service, dests[m.stable], ports.get(service, ()))
            value = {"destination": dest, "weight": w}
            appends.append({"op": "add", "path": _pointer(*at, "-"), "value": value})
    ops.extend({"op": "remove", "path": _pointer(*at, j)} for j in sorted(removes, reverse=True))
    return ops + appends


def _string_match(value: StringMatch) -> Obj:
    """An Istio StringMatch (exactly one of exact, prefix, regex)."""
    kind = "exact" if value.exact is not None else "prefix" if value.prefix is not None else "regex"
    return {kind: getattr(value, kind)}


def header_route(target: Target, world: World, name: str, match: Sequence[HeaderMatch]) -> Obj:
    """The HTTP route that sends requests matching all ``match`` headers to the canary."""
    found = fit(world, target)
    first = found.first_http(target)
    stable_dest = _http(found.virtual_service)[first.index]["route"][first.stable]
    # Istio requires lowercase header names (HTTP header names ignore case anyway).
    headers = {m.header_name.lower(): _string_match(m.header_value) for m in match}
    return {
        "name": header_route_name(name),
        "match": [{"headers": headers}],
        "route": [{"destination": _canary_destination(target, stable_dest)}],
    }


def mirror_route(
    target: Target, world: World, name: str, match: Sequence[RouteMatch], percentage: int
) -> Obj:
    """The HTTP route that serves requests matching any of ``match`` with the managed
    routes' split (the stable and canary destinations of the first managed HTTP route,
    at the canary weight they carry now) and copies ``percentage`` percent of them to the
    canary."""
    found = fit(world, target)
    first = found.first_http(target)
    dests = _http(found.virtual_service)[first.index]["route"]
    stable = dests[first.stable]
    canary = _canary_destination(target, stable)
    weight = _share(first)
    matches: list[Obj] = []
    for m in match:
        condition: Obj = {}
        if m.method is not None:
            condition["method"] = _string_match(m.method)
        if m.path is not None:
            condition["uri"] = _string_match(m.path)
        if m.headers:
            condition["headers"] = {k.lower(): _string_match(v) for k, v in m.headers.items()}
        matches.append(condition)
    return {
        "name": header_route_name(name),
        "match": matches,
        "route": [
            {"destination": stable.get("destination") or {}, "weight": 100 - weight},
            {"destination": canary, "weight": weight},
        ],
        "mirror": canary,
        "mirrorPercentage": {"value": percentage},
    }


def _insert_at(http: list[Obj], first: int, target: Target, route_name: str) -> int:
    """Where a new header or mirror route goes: before the first managed route, and,
    with ``managedRoutes``, before Stepwise's routes that come later in that list."""
    order = target.route_order
    if order is None:
        return first

    def rank(name: str) -> int:
        short = name.removeprefix(HEADER_ROUTE_PREFIX)
        return order.index(short) if short in order else len(order)

    mine = rank(route_name)
    for i in range(first):
        if _own(http[i]) and rank(str(http[i].get("name"))) > mine:
            return i
    return first


def _named_route_ops(world: World, target: Target, wanted: Obj) -> list[Op]:
    """Operations that put ``wanted`` (a header or mirror route) before the first
    managed route, in ``managedRoutes`` order (or replace it); [] when it is already
    there as wanted."""
    found = fit(world, target)
    http = _http(found.virtual_service)
    first = found.first_http(target).index
    existing = next((i for i, r in enumerate(http) if r.get("name") == wanted["name"]), None)
    if existing is not None and existing < first:
        if http[existing] == wanted:
            return []
        return [{"op": "replace", "path": _pointer("spec", "http", existing), "value": wanted}]
    ops: list[Op] = []
    if existing is not None:  # after a managed route: it would never match; move it
        ops.append({"op": "remove", "path": _pointer("spec", "http", existing)})
    at = _insert_at(http, first, target, str(wanted["name"]))
    ops.append({"op": "add", "path": _pointer("spec", "http", at), "value": wanted})
    return ops


def header_route_ops(
    world: World, target: Target, name: str, match: Sequence[HeaderMatch]
) -> list[Op]:
    """Operations that put the header route just before the first managed route (or
    replace it); [] when it is already there as wanted."""
    return _named_route_ops(world, target, header_route(target, world, name, match))


def mirror_route_ops(
    world: World, target: Target, name: str, match: Sequence[RouteMatch], percentage: int
) -> list[Op]:
    """Operations that put the mirror route just before the first managed route (or
    replace it); [] when it is already there as wanted."""
    wanted = mirror_route(target, world, name, match, percentage)
    return _named_route_ops(world, target, wanted)


def remove_header_route_ops(vs: Obj | None, name: str) -> list[Op]:
    """Operations that delete the header (or mirror) route ``name`` ([] when absent)."""
    route_name = header_route_name(name)
    ops: list[Op] = []
    # Highest index first, so earlier removals do not shift later ones.
    for i, route in reversed(list(enumerate(_http(vs or {})))):
        if route.get("name") == route_name:
            ops.append({"op": "remove", "path": _pointer("spec", "http", i)})
    return ops


ROLES: Final = ("stable", "canary")


def subset_label_ops(world: World, target: Target, roles: Sequence[str] = ROLES) -> list[Op]:
    """Operations that make the subsets of ``roles`` (stable, canary) select their
    revisions ([] outside subset mode, when they already do, or while a revision is
    unknown)."""
    if target.subsets is None or world.destination_rule is None:
        return []
    dr = world.destination_rule
    (si, stable), (ci, canary) = _subsets(dr, target)
    ops: list[Op] = []
    for role, index, subset, revision in (
        ("stable", si, stable, world.stable_revision),
        ("canary", ci, canary, world.canary_revision),
    ):
        if revision is None or role not in roles:
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


class IstioRouter(RouterBase[Target]):
    """Routes one Rollout's traffic with an Istio VirtualService (and DestinationRule)."""

    name = "istio"
    target_type = Target

    # -- the protocol -----------------------------------------------------------------

    def _observe(self) -> TrafficState:
        """The canary weight and header routes the VirtualService holds now (a problem
        when it does not fit)."""
        world = self._world(cached=True)
        return read_state(world, self.target, fallback_weight=self.rollout.status.canary_weight)

    def set_weight(self, weight: int, extra: Weights = ()) -> None:
        """Send ``weight`` percent of every managed route to the canary, then verify."""
        target = self.target.with_experiments(extra)
        ports = self._experiment_ports(extra)
        self._write(
            lambda world: weight_ops(world, target, weight, extra, ports),
            f"canary weight {weight}",
            to_canary=weight > 0,
        )

        def holds(world: World) -> str | None:
            written = canary_weight(world, target)
            held = dict(extra_weights(world, target))
            if written == weight and all(held.get(n, 0) == w for n, w in extra):
                return None
            also = f" (experiment weights {held} after {dict(extra)})" if extra else ""
            return f"the canary weight reads {written} after writing {weight}{also}"

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
            to_canary=False,
        )

        def holds(world: World) -> str | None:
            if name not in header_routes(world.virtual_service):
                return None
            return f"header route {header_route_name(name)} is still there after its removal"

        self._verify(holds)
        log.info("header route removed", router=self.name, route=header_route_name(name))

    def set_mirror_route(self, name: str, match: tuple[RouteMatch, ...], percentage: int) -> None:
        """Insert (or replace) the mirror route ``stepwise-<name>``: matching requests
        keep the managed routes' split and ``percentage`` percent are copied to the
        canary."""
        self._write(
            lambda world: mirror_route_ops(world, self.target, name, match, percentage),
            f"mirror route {name}",
        )

        def holds(world: World) -> str | None:
            wanted = mirror_route(self.target, world, name, match, percentage)
            if any(r == wanted for r in _http(world.virtual_service or {})):
                return None
            return f"mirror route {header_route_name(name)} is not as written"

        self._verify(holds)
        log.info(
            "mirror route set",
            router=self.name,
            route=header_route_name(name),
            percentage=percentage,
        )

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

    def _pinned(self, service: str | None) -> tuple[bool, str | None]:
        """(exists, the revision its selector is pinned to); (True, None) for a Service
        the Rollout does not name (subset mode)."""
        if service is None:
            return True, None
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
        # Without a Service, the revisions this pass decided (a write), else the status
        # the router was built from (observe): the promoting pass relabels the stable
        # subset before it moves traffic back to it.
        status = self.decided or self.rollout.status
        return World(
            virtual_service=vs,
            destination_rule=dr,
            stable_revision=stable or status.stable_revision,
            canary_revision=canary or status.canary_revision,
            canary_service_found=canary_found,
        )

    # -- writing ----------------------------------------------------------------------

    def _write(
        self,
        compute: Callable[[World], list[Op]],
        what: str,
        *,
        require_fit: bool = True,
        to_canary: bool = True,
    ) -> None:
        """Read, compute, patch (subset labels first, then the VirtualService) under a
        resourceVersion test; re-read and recompute when someone else wrote meanwhile.

        A write that sends the canary nothing (weight 0, a route removed) relabels the
        canary subset only after the VirtualService: a superseded canary keeps its pods
        until no route sends to that subset any more, as the canary Service would."""
        t = self.target
        first_roles = ROLES if to_canary else ("stable",)

        def attempt() -> None:
            world = self._world()
            try:
                label_ops = self._label_ops(world, first_roles, require_fit=require_fit)
                vs_ops = compute(world)
            except MisfitError as misfit:
                # The objects changed since observe(): a stale view, decided again next pass.
                raise ConflictError(f"{what} not written: {misfit}") from misfit
            if label_ops and world.destination_rule is not None and t.subsets:
                self._patch(DR_KIND, t.subsets.rule, world.destination_rule, label_ops)
            if vs_ops and world.virtual_service is not None:
                self._patch(VS_KIND, t.virtual_service, world.virtual_service, vs_ops)
            if not to_canary and t.subsets:
                after = self._world()
                try:
                    late = self._label_ops(after, ("canary",), require_fit=False)
                except MisfitError:
                    late = []
                if late and after.destination_rule is not None:
                    self._patch(DR_KIND, t.subsets.rule, after.destination_rule, late)

        self._retrying(what, attempt)

    def _label_ops(self, world: World, roles: Sequence[str], *, require_fit: bool) -> list[Op]:
        """Subset label operations for ``roles``: every write brings the subsets to the
        revisions the Services are pinned to, or without Services to the ones this pass
        decided (a header-route removal too, when the objects fit, so a promotion that
        moves no weight still re-points the stable subset)."""
        try:
            fit(world, self.target)
        except MisfitError:
            if require_fit:
                raise
            return []
        return subset_label_ops(world, self.target, roles)
