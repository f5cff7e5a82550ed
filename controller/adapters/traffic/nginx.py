"""NGINX ingress router: a canary Ingress cloned from the stable one, weighted by annotation.

Where it sits: ``registry`` builds an :class:`NginxRouter` for a Rollout with
``trafficRouting.nginx`` on every reconcile; the reconciler calls :meth:`observe` each
pass and :meth:`set_weight` when ``core.plan`` returns SetWeight (and on deletion, through
the finalizer). The canary Ingress is computed by pure functions on plain dicts
(:func:`canary_ingress`, :func:`read_state`); the class only reads, applies and verifies.

**The canary Ingress** is named ``<stableIngress>-<rollout>-canary`` and is controlled by
the Rollout (ownerReference), so garbage collection removes it with the Rollout. It is
the stable Ingress with:

- only the paths (and default backend) that send to the stable Service, now sending to
  the canary Service; rules left without a path are dropped (ingress-nginx applies a
  canary Ingress per host and path of the main one, so other paths must not be there);
- the stable Ingress's annotations, except its own ``<prefix>/canary*`` ones (and
  kubectl's last-applied-configuration), plus ``<prefix>/canary: "true"``,
  ``<prefix>/canary-weight: "<w>"`` and ``<prefix>/canary-weight-total: "100"``;
- the label ``stepwise.dev/rollout``.

The stable Ingress is only ever read.

**Weight 0** keeps the canary Ingress, at weight 0: ingress-nginx then sends every
request to the stable backend, and the next canary changes one annotation instead of
creating an Ingress at the moment traffic moves (where an admission webhook could reject
it). Before the first weight above 0 there is no canary Ingress at all, which reads as
weight 0 too. Deleting the Rollout deletes the canary Ingress (ownerReference).

**Header routes** are not supported: the Rollout API rejects ``setHeaderRoute`` with
``nginx``; :meth:`NginxRouter.set_header_route` raises
:class:`~controller.errors.InvalidSpecError` should it be called anyway, and the router
never reports header routes (so removing one has nothing to do).

**Writes** are server-side apply with field manager ``stepwise-controller`` and
``force`` (:meth:`~controller.adapters.traffic.base.RouterBase._apply`): the canary
Ingress is ours, so applying the whole desired object is exact,
and apply's field ownership does the rest. Fields someone else adds to the canary
Ingress (an annotation from another tool) are theirs and survive our applies; a field
we applied before and no longer apply (an annotation removed from the stable Ingress)
is removed. There is no read-modify-write of someone else's object, so no update can be
lost. A JSON Patch guarded by resourceVersion would also work, but it would need a fresh
read and a diff of every copied annotation on each write, and it could not tell an
annotation we copied from one another tool added. ``fence()`` runs before every write and
every call goes through :func:`~controller.adapters.retry.call_api`. After a write the
canary Ingress is read again and its weight verified; a mismatch raises
:class:`~controller.errors.ConflictError`.

**Problems.** :meth:`observe` never raises: a missing stable Ingress, one with no backend
for the stable Service, a missing canary Service, or an Ingress of the canary's name that
the Rollout does not own are a ``TrafficState.problem`` (the plan holds traffic and says
why), and a Warning event is recorded on the Rollout once per distinct problem.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Final

import structlog

from controller.adapters.kube import ROLLOUT_LABEL, owner_reference
from controller.adapters.traffic.base import RouterBase, ServicesTarget, routing_of, services_of
from controller.adapters.traffic.reads import Kind, Obj
from controller.api.rollout import HeaderMatch, Rollout
from controller.core.model import TrafficState, Weights
from controller.errors import ConflictError, InvalidSpecError

log = structlog.get_logger()

LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
WEIGHT_TOTAL: Final = 100
KIND: Final = Kind("networking.k8s.io", "v1", "ingresses")


@dataclass(frozen=True)
class Target(ServicesTarget):
    """The Ingresses and names one Rollout routes with."""

    rollout: str
    rollout_uid: str
    stable_ingress: str
    prefix: str = "nginx.ingress.kubernetes.io"
    """The ingress controller's annotation prefix."""

    @classmethod
    def of(cls, rollout: Rollout) -> Target:
        """The target of a Rollout with ``trafficRouting.nginx``."""
        canary, routing = routing_of(rollout, lambda t: t.nginx, "NGINX")
        return cls(
            rollout.metadata.namespace or "default",
            *services_of(canary, "NGINX"),
            rollout=rollout.metadata.name,
            rollout_uid=rollout.metadata.uid or "",
            stable_ingress=routing.stable_ingress,
            prefix=routing.annotation_prefix,
        )

    @property
    def objects(self) -> str:
        """What the router reads, as a problem names it when it cannot."""
        return "the Ingresses"

    @property
    def canary_ingress(self) -> str:
        """The canary Ingress's name."""
        return f"{self.stable_ingress}-{self.rollout}-canary"[:253]

    def annotation(self, name: str) -> str:
        """An ingress-nginx annotation key under the configured prefix."""
        return f"{self.prefix}/{name}"


@dataclass(frozen=True)
class World:
    """What the router read (None when an Ingress is missing)."""

    stable_ingress: Obj | None
    canary_ingress: Obj | None = None
    canary_service_found: bool = True


# -- pure reading ----------------------------------------------------------------------


def _service(backend: Any) -> str | None:
    if not isinstance(backend, dict):
        return None
    service = backend.get("service")
    return str(service.get("name")) if isinstance(service, dict) else None


def _is_canary_annotation(target: Target, key: str) -> bool:
    canary = target.annotation("canary")
    return key == canary or key.startswith(f"{canary}-")


def stable_problem(stable: Obj | None, target: Target) -> str | None:
    """Why the stable Ingress cannot be cloned (None when it can)."""
    if stable is None:
        return f"stable Ingress {target.stable_ingress} not found in {target.namespace}"
    annotations = (stable.get("metadata") or {}).get("annotations") or {}
    if annotations.get(target.annotation("canary")) == "true":
        return (
            f"stable Ingress {target.stable_ingress} is itself a canary Ingress "
            f"({target.annotation('canary')}: true)"
        )
    spec = stable.get("spec") or {}
    backends = [spec.get("defaultBackend")] + [
        path.get("backend")
        for rule in spec.get("rules") or []
        for path in ((rule or {}).get("http") or {}).get("paths") or []
    ]
    if target.stable_service not in {_service(b) for b in backends}:
        return (
            f"stable Ingress {target.stable_ingress} has no backend for the stable Service "
            f"{target.stable_service}"
        )
    return None


def owned(ingress: Obj, target: Target) -> bool:
    """Whether the Rollout controls ``ingress`` (its ownerReference)."""
    refs = (ingress.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == target.rollout_uid and r.get("controller") for r in refs)


def canary_weight(canary: Obj | None, target: Target) -> int:
    """Percent of traffic the canary Ingress takes (0 when there is none or it is not a
    canary); raises ValueError on an unreadable weight."""
    if canary is None:
        return 0
    annotations = (canary.get("metadata") or {}).get("annotations") or {}
    if annotations.get(target.annotation("canary")) != "true":
        return 0
    weight = int(annotations.get(target.annotation("canary-weight")) or 0)
    total = int(annotations.get(target.annotation("canary-weight-total")) or WEIGHT_TOTAL)
    if total <= 0:
        raise ValueError(f"canary-weight-total is {total}")
    return max(0, min(100, round(100 * weight / total)))


def read_state(world: World, target: Target, *, fallback_weight: int = 0) -> TrafficState:
    """What the Ingresses do now. ``fallback_weight`` is reported when the canary
    Ingress's weight cannot be read (the last weight the Rollout recorded)."""
    canary = world.canary_ingress
    problem = stable_problem(world.stable_ingress, target)
    if canary is not None and not owned(canary, target):
        problem = problem or (
            f"Ingress {target.canary_ingress} exists and is not controlled by Rollout "
            f"{target.rollout}; Stepwise will not overwrite it"
        )
        return TrafficState(canary_weight=fallback_weight, problem=problem)
    try:
        weight = canary_weight(canary, target)
    except ValueError as err:
        return TrafficState(
            canary_weight=fallback_weight,
            problem=problem or f"canary Ingress {target.canary_ingress}: unreadable weight: {err}",
        )
    if problem is None and not world.canary_service_found:
        problem = f"canary Service {target.canary_service} not found"
    return TrafficState(canary_weight=weight, problem=problem)


def refusal(world: World, target: Target, weight: int) -> str | None:
    """Why ``weight`` must not be written now (None: it may). Weight 0 needs only the
    stable Ingress; a positive weight needs the canary Service too."""
    problem = stable_problem(world.stable_ingress, target)
    if (
        problem is None
        and world.canary_ingress is not None
        and not owned(world.canary_ingress, target)
    ):
        problem = f"Ingress {target.canary_ingress} is not controlled by Rollout {target.rollout}"
    if problem is None and weight > 0 and not world.canary_service_found:
        problem = f"canary Service {target.canary_service} not found"
    return problem


# -- the desired canary Ingress --------------------------------------------------------


def _canary_backend(backend: Any, target: Target) -> Obj | None:
    """The backend with the stable Service replaced by the canary one (None: another
    Service's backend, which the canary Ingress leaves out)."""
    if _service(backend) != target.stable_service:
        return None
    out: Obj = copy.deepcopy(backend)
    out["service"]["name"] = target.canary_service
    return out


def canary_ingress(stable: Obj, target: Target, weight: int) -> Obj:
    """The canary Ingress (an apply configuration) for ``weight`` percent."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is not within 0..100")
    meta = stable.get("metadata") or {}
    spec = stable.get("spec") or {}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not _is_canary_annotation(target, k) and k != LAST_APPLIED
    }
    annotations[target.annotation("canary")] = "true"
    annotations[target.annotation("canary-weight")] = str(weight)
    annotations[target.annotation("canary-weight-total")] = str(WEIGHT_TOTAL)
    rules = []
    for rule in spec.get("rules") or []:
        paths = []
        for path in ((rule or {}).get("http") or {}).get("paths") or []:
            backend = _canary_backend(path.get("backend"), target)
            if backend is not None:
                paths.append({**copy.deepcopy(path), "backend": backend})
        if paths:
            rules.append({**copy.deepcopy(rule), "http": {"paths": paths}})
    new_spec: Obj = {}
    if spec.get("ingressClassName"):
        new_spec["ingressClassName"] = spec["ingressClassName"]
    default = _canary_backend(spec.get("defaultBackend"), target)
    if default is not None:
        new_spec["defaultBackend"] = default
    if rules:
        new_spec["rules"] = rules
    if spec.get("tls"):
        new_spec["tls"] = copy.deepcopy(spec["tls"])
    owner = {"metadata": {"name": target.rollout, "uid": target.rollout_uid}}
    return {
        "apiVersion": KIND.api_version,
        "kind": "Ingress",
        "metadata": {
            "name": target.canary_ingress,
            "namespace": target.namespace,
            "labels": {ROLLOUT_LABEL: target.rollout},
            "annotations": annotations,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": new_spec,
    }


# -- the router ------------------------------------------------------------------------


class NginxRouter(RouterBase[Target]):
    """Routes one Rollout's traffic with an ingress-nginx canary Ingress."""

    name = "nginx"
    target_type = Target

    # -- the protocol -----------------------------------------------------------------

    def _observe(self) -> TrafficState:
        """The canary weight the canary Ingress holds now (a problem when the Ingresses
        do not fit)."""
        world = self._world(cached=True)
        return read_state(world, self.target, fallback_weight=self.rollout.status.canary_weight)

    def set_weight(self, weight: int, extra: Weights = ()) -> None:
        """Apply the canary Ingress with ``weight`` (nothing to do at 0 when there is no
        canary Ingress), then verify."""
        if any(w for _, w in extra):
            raise InvalidSpecError(
                [
                    "spec.strategy.canary.steps: experiment template weight is not supported "
                    "with trafficRouting.nginx (the Rollout's validation refuses it; this is "
                    "the last line)"
                ]
            )
        t = self.target
        world = self._world()
        refused = refusal(world, t, weight)
        if refused is not None:
            # The objects changed since observe(): a stale view, decided again next pass.
            raise ConflictError(f"canary weight {weight} not written: {refused}")
        if world.canary_ingress is None and weight == 0:
            return
        assert world.stable_ingress is not None
        self._apply(KIND, t.canary_ingress, canary_ingress(world.stable_ingress, t, weight))
        verified = self._verified(KIND, t.canary_ingress)
        try:
            written = canary_weight(verified, t)
        except ValueError as err:
            raise ConflictError(f"canary Ingress {t.canary_ingress}: {err}") from err
        if written != weight:
            raise ConflictError(
                f"canary Ingress {t.canary_ingress}: the weight reads {written} after "
                f"writing {weight}"
            )
        log.info("traffic weight set", router=self.name, ingress=t.canary_ingress, weight=weight)

    def set_header_route(self, name: str, match: tuple[HeaderMatch, ...]) -> None:
        """Refuse: this router routes by weight only."""
        raise InvalidSpecError(
            [
                f"spec.strategy.canary.steps: setHeaderRoute {name!r} is not supported with "
                "trafficRouting.nginx (use gatewayAPI or istio for header routes)"
            ]
        )

    def remove_header_route(self, name: str) -> None:
        """Nothing to do: this router never has header routes."""

    # -- reading ----------------------------------------------------------------------

    def _world(self, *, cached: bool = False) -> World:
        """The objects as they are (a write's fresh view), or as cached (observe). The
        Ingresses are read through the generic client: the JSON as a dict, the form the
        apply body has."""
        t = self.target
        return World(
            stable_ingress=self._read(KIND, t.stable_ingress, cached=cached),
            canary_ingress=self._read(KIND, t.canary_ingress, cached=cached),
            canary_service_found=self._service_exists(t.canary_service),
        )
