"""Gateway API router: canary weights and header routes in an HTTPRoute.

Where it sits: :func:`controller.adapters.traffic.registry.factory` builds one
:class:`GatewayApiRouter` per reconcile of a Rollout with ``trafficRouting.gatewayAPI``;
the reconciler calls :meth:`~GatewayApiRouter.observe` on every pass (its
:class:`~controller.core.model.TrafficState` feeds ``core.plan``) and carries out the
plan's ``SetWeight``, ``SetHeaderRoute`` and ``RemoveHeaderRoute`` actions through the
other three methods. The module-level functions compute everything from plain dicts
(the route as the API server returns it), so they are tested without a cluster; the
class only reads, patches and verifies.

What Stepwise owns in the route (and nothing else):

- **Managed rules**: the rules named in ``ruleNames``, or else every rule with a
  backendRef to the stable Service (in the Rollout's namespace). In each, the ``weight``
  of the stable backendRef (``100 - w``) and of the canary backendRef (``w``); a managed
  rule without a canary backendRef gets one, on the stable one's port. Any other
  backendRef of a managed rule keeps its weight, so the percentage is of the traffic the
  rule gives to stable and canary together. Upstream's default weight is 1, so a
  lone stable backendRef reads as 0% canary.
- **Experiment backendRefs**: while a weighted experiment runs, one backendRef per
  experiment Service in every managed rule (on the stable one's port, or the Service's
  own port when it lacks that one), its weight taken from the stable's; removed when its
  weight returns to 0, before the Service is deleted. The canary's percentage is then of
  stable, canary and experiment Services together.
- **Header rules**: one rule per header route, named ``stepwise-<name>`` (rule names are
  GEP-995, standard channel), whose only backendRef is the canary Service with weight 1.
  A rule is recognised as ours by that name *and* that single canary backendRef, so a
  rule of the same name that routes elsewhere (a team's own, or another Rollout's sharing
  the route) is never read as ours or overwritten. Its matches are the managed rules'
  matches (path, method, query parameters, headers) with the header conditions added:
  it is never broader than the route, and Gateway API precedence (same path, more header
  matches) makes it win over the weighted rule. It also copies their filters, timeouts
  and retry settings, so the canary gets requests exactly as the stable does (managed
  rules that differ there are a problem for a header route: name one in ``ruleNames``).
  It is inserted just before the first managed rule, so ties also go to it. Gateway API
  has no header prefix match: a prefix becomes the RE2 expression ``^<escaped prefix>.*``.

A misfit (no HTTPRoute, the API not served, no rule for the stable Service, a
``ruleNames`` entry that does not exist, managed rules that disagree, no canary Service)
is reported by ``observe`` as ``TrafficState.problem``, and the plan then writes nothing:
there is never a partial split. A write that finds the route changed into a misfit
raises :class:`~controller.errors.ConflictError` without writing.

Writes: each write reads the route and computes ``add``, ``replace`` and ``remove``
operations addressed by index that touch only the fields above, sent as the guarded JSON
Patch of :mod:`controller.adapters.traffic.base` (a concurrent edit is never lost, and
indices are always those of the version tested), then verified by a fresh read.
Server-side apply was the alternative, but upstream's ``rules`` and ``backendRefs`` are
atomic lists (no list-map keys): applying our weights would make ``stepwise-controller``
the owner of every rule and send our copy of rules other actors edit, and a JSON merge
patch replaces lists whole.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from controller.adapters.kube import FIELD_MANAGER
from controller.adapters.traffic.base import (
    HEADER_ROUTE_PREFIX,
    Op,
    RouterBase,
    ServicesTarget,
    experiment_port,
    header_route_name,
    routing_of,
    services_of,
    stable_share,
)
from controller.adapters.traffic.reads import Kind
from controller.api.rollout import HeaderMatch, Rollout
from controller.core import experiment
from controller.core.model import TrafficState, Weights
from controller.errors import ConflictError

KIND: Final = Kind("gateway.networking.k8s.io", "v1", "httproutes")

#: What an HTTPRouteMatch is when the rule has none (upstream's default).
DEFAULT_MATCH: Final[dict[str, Any]] = {"path": {"type": "PathPrefix", "value": "/"}}
#: Rule fields a header rule copies from the managed rules: the canary must get requests
#: exactly as the stable gets them (a URL rewrite, a header filter, the same timeouts).
RULE_SETTINGS: Final[tuple[str, ...]] = ("filters", "timeouts", "retry", "sessionPersistence")
_RE2_SPECIAL: Final = frozenset("\\.+*?()|[]{}^$")


Route = dict[str, Any]


@dataclass(frozen=True)
class Target(ServicesTarget):
    """The HTTPRoute of one Rollout, and which of its rules are Stepwise's."""

    route: str
    """The HTTPRoute's name."""
    rule_names: tuple[str, ...] = ()
    """Empty: every rule that references the stable Service."""

    @classmethod
    def of(cls, rollout: Rollout) -> Target:
        """The target of a Rollout with ``trafficRouting.gatewayAPI``."""
        canary, routing = routing_of(rollout, lambda t: t.gateway_api, "gatewayAPI")
        return cls(
            rollout.metadata.namespace or "default",
            *services_of(canary, "gatewayAPI"),
            route=routing.http_route,
            rule_names=tuple(routing.rule_names or ()),
            experiments=experiment.routed_services(rollout),
        )

    @property
    def objects(self) -> str:
        """What the router reads, as a problem names it when it cannot."""
        return f"HTTPRoute {self.route}"


@dataclass(frozen=True)
class Managed:
    """A managed rule: its index, and the indices of its stable and canary backendRefs."""

    index: int
    stable: int
    canary: int | None


# -- reading the route -----------------------------------------------------------------


def _rules(route: Route) -> list[dict[str, Any]]:
    rules = (route.get("spec") or {}).get("rules") or []
    return list(rules)


def _refs(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return list(rule.get("backendRefs") or [])


def _name(route: Route) -> str:
    return str((route.get("metadata") or {}).get("name", ""))


def _label(rule: dict[str, Any], index: int) -> str:
    return f"rule {rule['name']}" if rule.get("name") else f"rules[{index}]"


def _weight(ref: dict[str, Any]) -> int:
    """A backendRef's weight (upstream's default is 1)."""
    return int(ref.get("weight", 1))


def is_service_ref(ref: dict[str, Any], service: str, namespace: str) -> bool:
    """Whether a backendRef points at ``service`` in ``namespace``."""
    return (
        ref.get("group", "") == ""
        and ref.get("kind", "Service") == "Service"
        and ref.get("name") == service
        and ref.get("namespace", namespace) == namespace
    )


def _index_of(refs: list[dict[str, Any]], service: str, namespace: str) -> int | None:
    return next((j for j, ref in enumerate(refs) if is_service_ref(ref, service, namespace)), None)


def is_header_rule(rule: dict[str, Any], target: Target) -> bool:
    """Whether a rule is one of this Rollout's header routes: the reserved name prefix,
    and the canary Service as its only backendRef."""
    refs = _refs(rule)
    return (
        str(rule.get("name", "")).startswith(HEADER_ROUTE_PREFIX)
        and len(refs) == 1
        and is_service_ref(refs[0], target.canary_service, target.namespace)
    )


def header_routes(route: Route, target: Target) -> frozenset[str]:
    """Names of this Rollout's header routes in the route."""
    return frozenset(
        str(rule["name"]).removeprefix(HEADER_ROUTE_PREFIX)
        for rule in _rules(route)
        if is_header_rule(rule, target)
    )


def managed_rules(route: Route, target: Target) -> tuple[list[Managed], str | None]:
    """The rules whose weights Stepwise sets, or why there are none to set."""
    rules = _rules(route)
    name = _name(route)
    found: list[Managed] = []
    if target.rule_names:
        by_name = {str(r["name"]): i for i, r in enumerate(rules) if r.get("name")}
        missing = [n for n in target.rule_names if n not in by_name]
        if missing:
            return [], (
                f"HTTPRoute {name} has no rule named {', '.join(missing)} "
                "(trafficRouting.gatewayAPI.ruleNames)"
            )
        candidates = [by_name[n] for n in dict.fromkeys(target.rule_names)]
    else:
        candidates = [
            i
            for i, rule in enumerate(rules)
            if not is_header_rule(rule, target)
            and _index_of(_refs(rule), target.stable_service, target.namespace) is not None
        ]
        if not candidates:
            return [], (
                f"HTTPRoute {name} has no rule with a backendRef to the stable Service "
                f"{target.stable_service}"
            )
    for i in candidates:
        refs = _refs(rules[i])
        stable = _index_of(refs, target.stable_service, target.namespace)
        if stable is None:
            return [], (
                f"{_label(rules[i], i)} of HTTPRoute {name} has no backendRef to the stable "
                f"Service {target.stable_service}"
            )
        found.append(Managed(i, stable, _index_of(refs, target.canary_service, target.namespace)))
    return found, None


def _experiment_refs(refs: list[dict[str, Any]], target: Target) -> dict[str, int]:
    """The weights of a rule's backendRefs to experiment Services, by Service name."""
    return {
        name: _weight(ref)
        for name in sorted(target.experiments)
        for ref in refs
        if is_service_ref(ref, name, target.namespace)
    }


def read_extra(route: Route, target: Target) -> Weights:
    """The weights the managed rules give to experiment Services (the highest where rules
    disagree: the experiment's Service is kept for the most traffic it may get)."""
    managed, problem = managed_rules(route, target)
    if problem:
        return ()
    rules = _rules(route)
    found: dict[str, int] = {}
    for m in managed:
        for name, w in _experiment_refs(_refs(rules[m.index]), target).items():
            found[name] = max(w, found.get(name, 0))
    return tuple(sorted(found.items()))


def read_weight(route: Route, target: Target) -> tuple[int, str | None]:
    """The canary percentage the managed rules give (of the traffic they give to stable,
    canary and experiment Services together), or a problem. When managed rules disagree
    the highest percentage is returned with the problem (the canary keeps pods for the
    most traffic it may get)."""
    managed, problem = managed_rules(route, target)
    if problem:
        return 0, problem
    rules = _rules(route)
    weights: dict[str, int] = {}
    for m in managed:
        refs = _refs(rules[m.index])
        stable = _weight(refs[m.stable])
        canary = _weight(refs[m.canary]) if m.canary is not None else 0
        total = stable + canary + sum(_experiment_refs(refs, target).values())
        label = _label(rules[m.index], m.index)
        if total == 0:
            return 0, (
                f"{label} of HTTPRoute {_name(route)} gives weight 0 to both the stable and "
                "the canary Service"
            )
        weights[label] = round(100 * canary / total)
    if len(set(weights.values())) > 1:
        detail = ", ".join(f"{label} {w}%" for label, w in weights.items())
        return max(weights.values()), (
            f"the managed rules of HTTPRoute {_name(route)} disagree on the canary weight "
            f"({detail})"
        )
    return next(iter(weights.values())), None


def read_state(route: Route | None, target: Target, *, now: dt.datetime) -> TrafficState:
    """What the HTTPRoute does now (``now``: to judge whether its data plane has applied
    it, :func:`applied`)."""
    if route is None:
        return TrafficState(
            canary_weight=0,
            problem=f"HTTPRoute {target.route} not found in namespace {target.namespace}",
        )
    weight, problem = read_weight(route, target)
    return TrafficState(
        canary_weight=weight,
        header_routes=header_routes(route, target),
        settled=applied(route, now),
        extra_weights=read_extra(route, target),
        problem=problem,
    )


APPLY_SECONDS: Final = 3.0
"""How long after Stepwise's last write of a route its data plane may still apply the
old one, beyond the route's status saying it has the new generation: a Gateway reports
what it has processed, and may apply it later (Traefik applies a configuration up to its
``providersThrottleDuration``, 2 s by default, after it has processed it)."""


def taken_in(route: Route) -> bool:
    """Whether the Gateways have taken in the route's current spec: False while a parent's
    status reports a condition for an older generation than ``metadata.generation`` (the
    implementation has not processed the last write yet). A route with no parent status
    (no implementation reports one) counts as taken in: there is nothing to wait for."""
    generation = (route.get("metadata") or {}).get("generation")
    if not isinstance(generation, int):
        return True
    for parent in (route.get("status") or {}).get("parents") or []:
        for condition in parent.get("conditions") or []:
            seen = condition.get("observedGeneration")
            if isinstance(seen, int) and seen < generation:
                return False
    return True


def last_written(route: Route, manager: str = FIELD_MANAGER) -> dt.datetime | None:
    """When ``manager`` last changed the route's spec (``managedFields``, to the second)."""
    times = [
        entry.get("time")
        for entry in (route.get("metadata") or {}).get("managedFields") or []
        if entry.get("manager") == manager and entry.get("subresource") in (None, "")
    ]
    parsed = [dt.datetime.fromisoformat(str(t).replace("Z", "+00:00")) for t in times if t]
    return max(parsed) if parsed else None


def applied(route: Route, now: dt.datetime) -> bool:
    """Whether the data plane has applied the route as it is: taken in by every parent
    (:func:`taken_in`), and Stepwise's last write at least :data:`APPLY_SECONDS` old. A
    route no implementation reports on is judged by the time alone."""
    written = last_written(route)
    recent = written is not None and (now - written).total_seconds() < APPLY_SECONDS
    return taken_in(route) and not recent


# -- computing writes ------------------------------------------------------------------


def canary_ref(stable_ref: dict[str, Any], canary: str, weight: int) -> dict[str, Any]:
    """A backendRef to the canary Service on the stable backendRef's port."""
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": canary}
    if "port" in stable_ref:
        ref["port"] = stable_ref["port"]
    ref["weight"] = weight
    return ref


def weight_ops(
    route: Route,
    target: Target,
    weight: int,
    extra: Weights = (),
    ports: Mapping[str, tuple[int, ...]] | None = None,
) -> tuple[list[Op], str | None]:
    """JSON Patch operations that give the canary ``weight`` percent in every managed
    rule, and each experiment Service of ``extra`` its percent (a backendRef on the
    stable one's port, or the one of the Service's ``ports`` (:func:`experiment_port`),
    added when missing; removed at 0, so the route never names a Service about to be
    deleted), the stable Service the rest; nothing when that holds already, or the
    problem that forbids writing."""
    managed, problem = managed_rules(route, target)
    if problem:
        return [], problem
    stable_weight = stable_share(weight, extra)
    if stable_weight < 0:
        return [], (
            f"canary weight {weight}% and experiment weights "
            f"{', '.join(f'{n} {w}%' for n, w in extra)} add up to more than 100%"
        )
    rules = _rules(route)
    ops: list[Op] = []
    for m in managed:
        refs = _refs(rules[m.index])
        base = f"/spec/rules/{m.index}/backendRefs"
        appends: list[Op] = []
        removes: list[int] = []
        if refs[m.stable].get("weight") != stable_weight:
            ops.append({"op": "add", "path": f"{base}/{m.stable}/weight", "value": stable_weight})
        if m.canary is None:
            value = canary_ref(refs[m.stable], target.canary_service, weight)
            appends.append({"op": "add", "path": f"{base}/-", "value": value})
        elif refs[m.canary].get("weight") != weight:
            ops.append({"op": "add", "path": f"{base}/{m.canary}/weight", "value": weight})
        for name, w in extra:
            at = [j for j, ref in enumerate(refs) if is_service_ref(ref, name, target.namespace)]
            if w == 0:
                removes.extend(at)
            elif not at:
                value = canary_ref(refs[m.stable], name, w)
                if "port" in value and ports and name in ports:
                    value["port"] = experiment_port(ports[name], value["port"])
                appends.append({"op": "add", "path": f"{base}/-", "value": value})
            else:
                ops.extend(
                    {"op": "add", "path": f"{base}/{j}/weight", "value": w}
                    for j in at
                    if refs[j].get("weight") != w
                )
        # Weights first (indices as read), then removals from the end, then additions.
        ops.extend({"op": "remove", "path": f"{base}/{j}"} for j in sorted(removes, reverse=True))
        ops.extend(appends)
    return ops, None


def _re2_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in _RE2_SPECIAL else c for c in text)


def gateway_headers(match: Iterable[HeaderMatch]) -> list[dict[str, str]]:
    """Stepwise header conditions as HTTPHeaderMatch entries (a prefix becomes a regex)."""
    out: list[dict[str, str]] = []
    for m in match:
        value = m.header_value
        if value.exact is not None:
            out.append({"name": m.header_name, "type": "Exact", "value": value.exact})
        elif value.regex is not None:
            out.append({"name": m.header_name, "type": "RegularExpression", "value": value.regex})
        else:
            pattern = f"^{_re2_escape(value.prefix or '')}.*"
            out.append({"name": m.header_name, "type": "RegularExpression", "value": pattern})
    return out


def _with_headers(match: dict[str, Any], headers: list[dict[str, str]]) -> dict[str, Any]:
    """A copy of an HTTPRouteMatch with ``headers`` added (replacing same-named ones)."""
    ours = {h["name"].lower() for h in headers}
    out = {k: v for k, v in match.items() if k != "headers"}
    kept = [h for h in match.get("headers") or [] if str(h.get("name", "")).lower() not in ours]
    out["headers"] = [*kept, *headers]
    return out


def header_rule(
    route: Route, target: Target, name: str, match: Iterable[HeaderMatch]
) -> tuple[dict[str, Any] | None, str | None]:
    """The rule of header route ``name``, or the problem that forbids it."""
    managed, problem = managed_rules(route, target)
    if problem:
        return None, problem
    rules = _rules(route)
    headers = gateway_headers(match)
    matches: list[dict[str, Any]] = []
    for m in managed:
        for rule_match in rules[m.index].get("matches") or [DEFAULT_MATCH]:
            candidate = _with_headers(rule_match, headers)
            if candidate not in matches:
                matches.append(candidate)
    settings = [
        {k: rules[m.index][k] for k in RULE_SETTINGS if k in rules[m.index]} for m in managed
    ]
    if any(s != settings[0] for s in settings):
        return None, (
            f"the managed rules of HTTPRoute {_name(route)} differ in "
            f"{'/'.join(RULE_SETTINGS)}, so one header rule cannot copy them; name one rule "
            "in trafficRouting.gatewayAPI.ruleNames"
        )
    first = managed[0]
    stable_ref = _refs(rules[first.index])[first.stable]
    return {
        "name": header_route_name(name),
        "matches": matches,
        **settings[0],
        "backendRefs": [canary_ref(stable_ref, target.canary_service, 1)],
    }, None


def header_route_ops(
    route: Route, target: Target, name: str, match: Iterable[HeaderMatch]
) -> tuple[list[Op], str | None]:
    """JSON Patch operations that add or replace header route ``name`` (nothing when it
    is already as wanted), or the problem that forbids writing."""
    rule, problem = header_rule(route, target, name, match)
    if rule is None:
        return [], problem
    rules = _rules(route)
    same = [i for i, r in enumerate(rules) if r.get("name") == rule["name"]]
    if any(not is_header_rule(rules[i], target) for i in same):
        return [], (
            f"HTTPRoute {_name(route)} has a rule named {rule['name']} that does not route "
            f"only to the canary Service {target.canary_service}; rename it (the prefix "
            f"{HEADER_ROUTE_PREFIX} is reserved for Stepwise's header routes)"
        )
    if not same:
        managed, _ = managed_rules(route, target)
        return [{"op": "add", "path": f"/spec/rules/{managed[0].index}", "value": rule}], None
    ops: list[Op] = []
    if rules[same[0]] != rule:
        ops.append({"op": "replace", "path": f"/spec/rules/{same[0]}", "value": rule})
    ops.extend({"op": "remove", "path": f"/spec/rules/{i}"} for i in reversed(same[1:]))
    return ops, None


def remove_header_ops(route: Route, target: Target, name: str) -> list[Op]:
    """JSON Patch operations that remove header route ``name`` (none if it is absent)."""
    rule_name = header_route_name(name)
    return [
        {"op": "remove", "path": f"/spec/rules/{i}"}
        for i, rule in reversed(list(enumerate(_rules(route))))
        if rule.get("name") == rule_name and is_header_rule(rule, target)
    ]


# -- the router ------------------------------------------------------------------------


class GatewayApiRouter(RouterBase[Target]):
    """Reads and writes the Stepwise-owned parts of one HTTPRoute for one Rollout."""

    name = "gatewayAPI"
    target_type = Target

    def _observe(self) -> TrafficState:
        """The canary weight and header routes the HTTPRoute holds, or the problem."""
        t = self.target
        route = self._read(KIND, t.route, cached=True)
        state = read_state(route, t, now=dt.datetime.now(dt.UTC))
        return self._with_services(
            state, {"canary": t.canary_service}, "the HTTPRoute cannot route to it"
        )

    def set_weight(self, weight: int, extra: Weights = ()) -> None:
        """Give the canary ``weight`` percent and each experiment Service of ``extra`` its
        percent in every managed rule, then verify it."""
        target = self.target.with_experiments(extra)
        ports = self._experiment_ports(extra)
        self._write(
            f"canary weight {weight}",
            lambda route: weight_ops(route, target, weight, extra, ports),
        )
        route = self._verified(KIND, target.route) or {}
        read = read_weight(route, target)
        self._check_weight(
            f"HTTPRoute {target.route}", weight, extra, read, read_extra(route, target)
        )

    def set_header_route(self, name: str, match: tuple[HeaderMatch, ...]) -> None:
        """Add or replace the header rule ``stepwise-<name>``, then verify it is there."""
        t = self.target
        self._write(
            f"header route {name}",
            lambda route: header_route_ops(route, t, name, match),
        )
        if name not in header_routes(self._verified(KIND, t.route) or {}, t):
            raise ConflictError(
                f"HTTPRoute {t.route} lacks header rule {header_route_name(name)} after "
                "it was written"
            )

    def remove_header_route(self, name: str) -> None:
        """Remove the header rule ``stepwise-<name>`` (nothing if it or the route is gone)."""
        t = self.target
        self._write(
            f"removal of header route {name}",
            lambda route: (remove_header_ops(route, t, name), None),
            absent_ok=True,
        )
        route = self._verified(KIND, t.route)
        if route is not None and name in header_routes(route, t):
            raise ConflictError(
                f"HTTPRoute {t.route} still has header rule {header_route_name(name)} "
                "after it was removed"
            )

    def _write(
        self,
        what: str,
        compute: Callable[[Route], tuple[list[Op], str | None]],
        *,
        absent_ok: bool = False,
    ) -> None:
        """Read, compute, patch guarded by the resourceVersion read; again on a
        concurrent write. A missing route is nothing to do with ``absent_ok`` (a
        removal), else a conflict (the pass saw it; the next one decides again)."""
        name = self.target.route

        def attempt() -> None:
            route = self._read(KIND, name)
            if route is None:
                if absent_ok:
                    return
                raise ConflictError(f"HTTPRoute {name} not found; {what} not written")
            ops, problem = compute(route)
            if problem:
                raise ConflictError(f"HTTPRoute {name} cannot be written: {problem}")
            if ops:
                self._patch(KIND, name, route, ops)

        self._retrying(what, attempt)
