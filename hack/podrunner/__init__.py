"""The pod runner: real demo-app processes for kwok's fake pods.

kwok gives pods loopback IPs (127.1.0.0/16, see ``localcluster.cluster.POD_CIDR``); a pod
annotated ``stepwise.dev/serve: "true"`` is Running but not Ready until the runner serves
it on podIP:containerPort and annotates it ``stepwise.dev/serving: "true"``. See
:mod:`podrunner.spec` for the env names that configure the process and
:mod:`podrunner.runner` for the lifecycle. ``python -m podrunner --kubeconfig PATH`` runs
it for people; :class:`PodRunner` is for tests.
"""

from podrunner.runner import PodRunner, ServedPod
from podrunner.slices import MANAGED_BY
from podrunner.spec import ENV_OPTIONS, SERVE_ANNOTATION, SERVING_ANNOTATION, ServeSpec

__all__ = [
    "ENV_OPTIONS",
    "MANAGED_BY",
    "SERVE_ANNOTATION",
    "SERVING_ANNOTATION",
    "PodRunner",
    "ServeSpec",
    "ServedPod",
]
