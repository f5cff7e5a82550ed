"""Kubernetes calls of the ``job`` analysis provider: Jobs, their pods, the Rollout.

Thin on purpose: each method is one API call under the shared retry policy
(:func:`controller.adapters.retry.call_api`) and raises only :mod:`controller.errors`.
Objects come back as the API's JSON (camelCase dicts), which is what
:mod:`controller.core.jobs` reads. What to create, when to read and what to delete is
decided there and in :mod:`controller.runtime.measure_job`.

The calls, and so the permissions (charts/stepwise/templates/_rbac.tpl):

* Jobs (batch): ``create`` a measurement's Job, ``get`` it while it runs (and when a
  create finds it exists: a restarted controller re-attaches), ``list`` a Rollout's Jobs
  by label to clean them up, ``delete`` them (propagation Background, so their pods go
  too, with the Job's uid as a precondition, so a newer Job of that name is never hit);
* pods: ``list`` a failed Job's pods by its ``batch.kubernetes.io/job-name`` label, to
  say why its pod failed;
* Rollouts: ``list`` with a ``metadata.name`` field selector, to read the persisted
  status of one Rollout (the controller is granted list and watch on Rollouts, never
  get: its informer reads them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client

from controller.adapters.kube import FIELD_MANAGER
from controller.adapters.retry import call_api
from controller.api.rollout import GROUP, VERSION
from controller.errors import ConflictError, NotFoundError

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""The label the Job controller puts on a Job's pods."""


class JobsAdapter:
    """Jobs, pods and Rollouts through one API client."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _json(self, obj: Any) -> dict[str, Any]:
        data = self.api_client.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        assert isinstance(data, dict)
        return data

    def create(self, namespace: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Job; when one of that name exists already, that one. Returns
        (job, created)."""
        name = str(body["metadata"]["name"])
        try:
            job = call_api(
                lambda: self.batch.create_namespaced_job(
                    namespace,
                    dict(body),  # type: ignore[arg-type]  # the client sends a plain dict as it is
                    field_manager=FIELD_MANAGER,
                )
            )
        except ConflictError:
            return self.get(namespace, name), False
        return self._json(job), True

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The Job (raises NotFoundError when it is gone)."""
        return self._json(call_api(lambda: self.batch.read_namespaced_job(name, namespace)))

    def list_jobs(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The Jobs in ``namespace`` with these labels."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        found = call_api(lambda: self.batch.list_namespaced_job(namespace, label_selector=selector))
        return [self._json(job) for job in found.items or []]

    def delete(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete the Job and, in the background, its pods; False when it was gone
        already (or ``uid`` is another Job's: a newer one of that name is kept)."""
        options = client.V1DeleteOptions(
            propagation_policy="Background",
            preconditions=client.V1Preconditions(uid=uid) if uid else None,
        )
        try:
            call_api(lambda: self.batch.delete_namespaced_job(name, namespace, body=options))
        except (NotFoundError, ConflictError):
            return False
        return True

    def pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of the Job named ``job``."""
        found = call_api(
            lambda: self.core.list_namespaced_pod(
                namespace, label_selector=f"{JOB_NAME_LABEL}={job}"
            )
        )
        return [self._json(pod) for pod in found.items or []]

    def rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Rollout as the API server has it now (None when there is none)."""
        found = call_api(
            lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "rollouts", field_selector=f"metadata.name={name}"
            )
        )
        items = found.get("items") or [] if isinstance(found, dict) else []
        return items[0] if items and isinstance(items[0], dict) else None
