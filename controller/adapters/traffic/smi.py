"""SMI router: the backend weights of a TrafficSplit the Rollout owns.

Where it sits: :func:`controller.adapters.traffic.registry.factory` builds one
:class:`SmiRouter` per reconcile of a Rollout with ``trafficRouting.smi``; the reconciler
calls :meth:`~SmiRouter.observe` on every pass (its
:class:`~controller.core.model.TrafficState` feeds ``core.plan``) and carries out the
plan's ``SetWeight`` actions through :meth:`~SmiRouter.set_weight`. The module-level
functions compute everything from plain dicts; the class only reads, writes and verifies.

The TrafficSplit (``split.smi-spec.io/v1alpha2``: integer weights, the version SMI
implementations serve; see ``hack/crds/smi-trafficsplit.yaml``) is named
``trafficSplitName`` (default: the Rollout's name) and splits ``rootService`` (default:
the stable Service) between two backends, ``[{stable: 100 - w}, {canary: w}]``, plus one
backend per experiment Service while a weighted experiment runs (its weight taken from
the stable's; gone again when it returns to 0). Stepwise
creates it on the first weight it writes, controlled by the Rollout (an ownerReference,
so it is garbage-collected with the Rollout once the finalizer has sent all traffic back
to stable), and owns all of it: a write sets ``spec.service`` and ``spec.backends`` whole.
Before that first write there is no split, which means 0% canary when the root Service
is the stable Service (the default); a separate root Service that selects every revision
splits by pod count until then.

A TrafficSplit of that name that the Rollout does not control is never taken over, and
one that splits another Service is not rewritten: ``observe`` reports either as
``TrafficState.problem`` (as it does a missing canary or root Service, or the API not
being served), and the plan then writes nothing.

Writes are the guarded JSON Patch of :mod:`controller.adapters.traffic.base` (a
concurrent write makes the write start again from a fresh read), or a create when the
split does not exist; a fresh read must then show the weight written, else
:class:`~controller.errors.ConflictError`.

SMI TrafficSplit v1alpha2 cannot match headers, so :meth:`SmiRouter.set_header_route`
raises :class:`~controller.errors.InvalidSpecError` (the Rollout's validation already
rejects ``setHeaderRoute`` with SMI; this is the last line).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

import structlog

from controller.adapters.kube import owner_reference
from controller.adapters.traffic.base import MovedError, Op, RouterBase
from controller.adapters.traffic.reads import Kind
from controller.api.rollout import HeaderMatch, Rollout
from controller.core import experiment
from controller.core.model import TrafficState, Weights
from controller.errors import ApiError, ConflictError, InvalidSpecError

GROUP: Final = "split.smi-spec.io"
VERSION: Final = "v1alpha2"
PLURAL: Final = "trafficsplits"
RESOURCE: Final = Kind(GROUP, VERSION, PLURAL)
KIND: Final = "TrafficSplit"

log = structlog.get_logger()

Split = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """The TrafficSplit of one Rollout and the Services it splits."""

    namespace: str
    name: str
    root: str
    stable: str
    canary: str
    owner_uid: str
    """The Rollout's UID: the split must be controlled by it."""
    experiments: frozenset[str] = frozenset()
    """Services of weighted experiment templates: their backends are Stepwise's
    (:func:`controller.core.experiment.routed_services`)."""


def desired_spec(target: Target, weight: int, extra: Weights = ()) -> dict[str, Any]:
    """The spec that sends ``weight`` percent of the root Service's traffic to the canary
    and each experiment Service of ``extra`` its percent (none at 0: a Service about to
    be deleted is never a backend), the rest to the stable Service."""
    rest = 100 - weight - sum(w for _, w in extra)
    return {
        "service": target.root,
        "backends": [
            {"service": target.stable, "weight": rest},
            {"service": target.canary, "weight": weight},
            *({"service": name, "weight": w} for name, w in extra if w > 0),
        ],
    }


def controlled_by(split: Split, uid: str) -> bool:
    """Whether the split's controller ownerReference is the Rollout with ``uid``."""
    refs = (split.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def read_weight(split: Split, target: Target) -> tuple[int, str | None]:
    """The canary percentage the split gives, or why it cannot be used."""
    if not controlled_by(split, target.owner_uid):
        return 0, (
            f"TrafficSplit {target.name} exists and is not controlled by this Rollout; "
            "Stepwise does not take over a split it did not create (delete it, or set "
            "trafficRouting.smi.trafficSplitName)"
        )
    spec = split.get("spec") or {}
    if spec.get("service") != target.root:
        return 0, (
            f"TrafficSplit {target.name} splits Service {spec.get('service')}, not the root "
            f"Service {target.root}; delete it and Stepwise creates it again"
        )
    weights = {b.get("service"): int(b.get("weight", 0)) for b in spec.get("backends") or []}
    stable, canary = weights.get(target.stable, 0), weights.get(target.canary, 0)
    if stable + canary == 0:
        return 0, (
            f"TrafficSplit {target.name} gives weight 0 to both the stable and the canary "
            "Service; delete it and Stepwise creates it again"
        )
    total = stable + canary + sum(w for _, w in read_extra(split, target))
    return round(100 * canary / total), None


def read_extra(split: Split, target: Target) -> Weights:
    """The weights the split gives to experiment Services, by Service name."""
    backends = (split.get("spec") or {}).get("backends") or []
    return tuple(
        sorted(
            (str(b["service"]), int(b.get("weight", 0)))
            for b in backends
            if b.get("service") in target.experiments
        )
    )


def build_split(target: Target, owner: dict[str, Any], weight: int, extra: Weights = ()) -> Split:
    """A new TrafficSplit controlled by ``owner`` (the Rollout's ownerReference)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": target.name,
            "namespace": target.namespace,
            "ownerReferences": [owner],
        },
        "spec": desired_spec(target, weight, extra),
    }


def spec_ops(split: Split, target: Target, weight: int, extra: Weights = ()) -> list[Op]:
    """JSON Patch operations that set the split's spec (none when it holds already)."""
    spec = split.get("spec") or {}
    wanted = desired_spec(target, weight, extra)
    return [
        {"op": "add", "path": f"/spec/{key}", "value": value}
        for key, value in wanted.items()
        if spec.get(key) != value
    ]


class SmiRouter(RouterBase):
    """Reads and writes the TrafficSplit of one Rollout."""

    name = "smi"

    def setup(self, rollout: Rollout) -> None:
        """The routing fields of the Rollout."""
        canary = rollout.spec.strategy.require_canary()
        routing = canary.traffic_routing.smi if canary.traffic_routing else None
        meta = rollout.metadata
        if routing is None or not canary.stable_service or not canary.canary_service:
            raise ValueError("SmiRouter needs smi routing and both Services")
        if not meta.uid:
            raise ValueError("SmiRouter needs the Rollout's UID")
        self._owner = owner_reference({"metadata": {"name": meta.name, "uid": meta.uid}})
        self._target = Target(
            namespace=self.namespace,
            name=routing.traffic_split_name or meta.name,
            root=routing.root_service or canary.stable_service,
            stable=canary.stable_service,
            canary=canary.canary_service,
            owner_uid=meta.uid,
            experiments=experiment.routed_services(rollout),
        )

    def observe(self) -> TrafficState:
        """The canary weight the TrafficSplit gives (0 before it exists), or the problem."""
        try:
            split = self._read(RESOURCE, self._target.name, cached=True)
        except ApiError as err:
            return self._unreadable(f"TrafficSplit {self._target.name}", err)
        weight, problem = read_weight(split, self._target) if split else (0, None)
        wanted = {"canary": self._target.canary}
        if self._target.root != self._target.stable:
            wanted["root"] = self._target.root
        return TrafficState(
            canary_weight=weight,
            problem=problem or self._services_problem(wanted, "the TrafficSplit cannot use it"),
            extra_weights=read_extra(split, self._target) if split and not problem else (),
        )

    def set_weight(self, weight: int, extra: Weights = ()) -> None:
        """Create or patch the TrafficSplit for ``weight`` percent to the canary and
        ``extra`` to experiment Services, then verify it."""
        name = self._target.name
        target = replace(self._target, experiments=self._target.experiments | {n for n, _ in extra})
        self._experiment_ports(extra)  # no backend is ever written for a missing Service

        def attempt() -> None:
            split = self._read(RESOURCE, name)
            if split is None:
                try:
                    self._create(RESOURCE, build_split(target, self._owner, weight, extra))
                except ConflictError as err:  # created meanwhile: read it and patch
                    raise MovedError(f"TrafficSplit {name} was created meanwhile") from err
                log.info("trafficsplit created", trafficsplit=name, weight=weight)
                return
            if not controlled_by(split, self._target.owner_uid):
                _, problem = read_weight(split, self._target)
                raise ConflictError(f"TrafficSplit {name} cannot be written: {problem}")
            ops = spec_ops(split, target, weight, extra)
            if ops:
                self._patch(RESOURCE, name, split, ops)

        self._retrying(f"canary weight {weight}", attempt)
        split = self._verified(RESOURCE, name) or {}
        got, problem = read_weight(split, target)
        held = dict(read_extra(split, target))
        if problem or got != weight or any(held.get(n, 0) != w for n, w in extra):
            also = f" (experiment weights {held} for {dict(extra)})" if extra else ""
            raise ConflictError(
                f"TrafficSplit {name} holds canary weight {got}% after {weight}% "
                f"was written{also}{f' ({problem})' if problem else ''}"
            )

    def set_header_route(self, name: str, match: tuple[HeaderMatch, ...]) -> None:
        """Refuse: an SMI TrafficSplit cannot route by header."""
        raise InvalidSpecError(
            [
                f"spec.strategy.canary.steps: setHeaderRoute {name} is not supported with "
                "trafficRouting.smi (a TrafficSplit cannot match headers); use gatewayAPI or "
                "istio"
            ]
        )

    def remove_header_route(self, name: str) -> None:
        """Nothing to remove: an SMI router never has header routes."""
