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

from dataclasses import dataclass
from typing import Any, Final

import structlog

from controller.adapters.kube import owner_reference
from controller.adapters.traffic.base import (
    MovedError,
    Op,
    RouterBase,
    ServicesTarget,
    routing_of,
    services_of,
    stable_share,
)
from controller.adapters.traffic.reads import Kind
from controller.api.rollout import HeaderMatch, Rollout
from controller.core import experiment
from controller.core.model import TrafficState, Weights
from controller.errors import ConflictError, InvalidSpecError

KIND: Final = Kind("split.smi-spec.io", "v1alpha2", "trafficsplits")

log = structlog.get_logger()

Split = dict[str, Any]


@dataclass(frozen=True)
class Target(ServicesTarget):
    """The TrafficSplit of one Rollout and the Services it splits."""

    name: str
    """The TrafficSplit's name."""
    root: str
    """The Service the split splits."""
    owner_uid: str
    """The Rollout's UID: the split must be controlled by it."""

    @classmethod
    def of(cls, rollout: Rollout) -> Target:
        """The target of a Rollout with ``trafficRouting.smi``."""
        canary, routing = routing_of(rollout, lambda t: t.smi, "smi")
        stable, canary_service = services_of(canary, "smi")
        meta = rollout.metadata
        if not meta.uid:
            raise ValueError("routing with smi needs the Rollout's UID")
        return cls(
            meta.namespace or "default",
            stable,
            canary_service,
            name=routing.traffic_split_name or meta.name,
            root=routing.root_service or stable,
            owner_uid=meta.uid,
            experiments=experiment.routed_services(rollout),
        )

    @property
    def objects(self) -> str:
        """What the router reads, as a problem names it when it cannot."""
        return f"TrafficSplit {self.name}"


def desired_spec(target: Target, weight: int, extra: Weights = ()) -> dict[str, Any]:
    """The spec that sends ``weight`` percent of the root Service's traffic to the canary
    and each experiment Service of ``extra`` its percent (none at 0: a Service about to
    be deleted is never a backend), the rest to the stable Service."""
    rest = stable_share(weight, extra)
    return {
        "service": target.root,
        "backends": [
            {"service": target.stable_service, "weight": rest},
            {"service": target.canary_service, "weight": weight},
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
    stable, canary = weights.get(target.stable_service, 0), weights.get(target.canary_service, 0)
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


def read_state(split: Split | None, target: Target) -> TrafficState:
    """What the TrafficSplit does now (0% canary before it exists)."""
    if split is None:
        return TrafficState(canary_weight=0)
    weight, problem = read_weight(split, target)
    return TrafficState(
        canary_weight=weight,
        problem=problem,
        extra_weights=read_extra(split, target) if not problem else (),
    )


def build_split(target: Target, owner: dict[str, Any], weight: int, extra: Weights = ()) -> Split:
    """A new TrafficSplit controlled by ``owner`` (the Rollout's ownerReference)."""
    return {
        "apiVersion": KIND.api_version,
        "kind": "TrafficSplit",
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


class SmiRouter(RouterBase[Target]):
    """Reads and writes the TrafficSplit of one Rollout."""

    name = "smi"
    target_type = Target

    def _observe(self) -> TrafficState:
        """The canary weight the TrafficSplit gives (0 before it exists), or the problem."""
        t = self.target
        state = read_state(self._read(KIND, t.name, cached=True), t)
        wanted = {"canary": t.canary_service}
        if t.root != t.stable_service:
            wanted["root"] = t.root
        return self._with_services(state, wanted, "the TrafficSplit cannot use it")

    def set_weight(self, weight: int, extra: Weights = ()) -> None:
        """Create or patch the TrafficSplit for ``weight`` percent to the canary and
        ``extra`` to experiment Services, then verify it."""
        name = self.target.name
        target = self.target.with_experiments(extra)
        self._experiment_ports(extra)  # no backend is ever written for a missing Service

        def attempt() -> None:
            split = self._read(KIND, name)
            if split is None:
                try:
                    self._create(KIND, build_split(target, self._owner(), weight, extra))
                except ConflictError as err:  # created meanwhile: read it and patch
                    raise MovedError(f"TrafficSplit {name} was created meanwhile") from err
                log.info("trafficsplit created", trafficsplit=name, weight=weight)
                return
            if not controlled_by(split, target.owner_uid):
                _, problem = read_weight(split, target)
                raise ConflictError(f"TrafficSplit {name} cannot be written: {problem}")
            ops = spec_ops(split, target, weight, extra)
            if ops:
                self._patch(KIND, name, split, ops)

        self._retrying(f"canary weight {weight}", attempt)
        split = self._verified(KIND, name) or {}
        read = read_weight(split, target)
        self._check_weight(f"TrafficSplit {name}", weight, extra, read, read_extra(split, target))

    def _owner(self) -> dict[str, Any]:
        """The ownerReference that makes the Rollout the split's controller."""
        meta = self.rollout.metadata
        return owner_reference({"metadata": {"name": meta.name, "uid": self.target.owner_uid}})

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
