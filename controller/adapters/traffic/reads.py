"""How routers read the objects they observe: from a watch cache when there is one.

A router's :meth:`~controller.adapters.traffic.Router.observe` runs on every pass of
its Rollout, which in analysis at a 1 s interval is every second. Reading the route
and the Services from the API server each time cost two to four GETs a pass. So
``observe`` reads through a :class:`Reads`:

- :class:`DirectReads` GETs every time (router tests, tools, and the fallback);
- the runtime's cached reads (:mod:`controller.runtime.objects`) answer from watches:
  Services from the Service informer the reconciler already has, router objects from
  an informer started the first time a kind is read.

Writes never read through :class:`Reads`: a write needs the object's current
resourceVersion, so it GETs, patches under a ``test`` of that version, and GETs again
to verify. The verified object is handed to :meth:`Reads.wrote`, so the next pass sees
what was written even before the watch delivers it (a cache that lags would otherwise
show the old weight and cause a second, idle write).

Semantics match a GET: :meth:`Reads.get` raises :class:`~controller.errors.NotFoundError`
with reason ``NotFound`` for an absent object, and a 404 with another reason when the
kind is not served.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from kubernetes import client

from controller.adapters.retry import call_api
from controller.errors import NotFoundError

Obj = dict[str, Any]


class Kind(NamedTuple):
    """A resource as the custom-objects API addresses it."""

    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` of its objects (``group/version``)."""
        return f"{self.group}/{self.version}"


def absent(kind: Kind, namespace: str, name: str) -> NotFoundError:
    """The error a GET of a missing object raises."""
    return NotFoundError(
        f'{kind.plural}.{kind.group} "{name}" not found in {namespace}', reason="NotFound"
    )


class Reads(Protocol):
    """Reads of router objects and Services, as of a recent moment."""

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        """The object (a dict, as a GET returns it); NotFoundError when absent."""
        ...

    def service(self, namespace: str, name: str) -> client.V1Service:
        """The Service; NotFoundError when absent."""
        ...

    def wrote(self, kind: Kind, obj: Obj) -> None:
        """``obj`` was just read back after a write: answer with it until the cache has
        caught up."""
        ...


class DirectReads:
    """Every read is a GET."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        """GET the object."""
        found = call_api(
            lambda: self._custom.get_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, name
            )
        )
        assert isinstance(found, dict)
        return found

    def service(self, namespace: str, name: str) -> client.V1Service:
        """GET the Service."""
        svc = call_api(lambda: self._core.read_namespaced_service(name, namespace))
        assert isinstance(svc, client.V1Service)
        return svc

    def wrote(self, kind: Kind, obj: Obj) -> None:
        """Nothing to remember: the next read is a GET."""
