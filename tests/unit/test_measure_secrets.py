"""Secrets in measurements (:mod:`controller.runtime.measure`): template arguments,
Prometheus credentials and a CA bundle read from Secrets, a Secret that cannot be read
becoming an Error measurement that names the Secret and the key, and Secret values never
reaching a log line or a message. The Secret API and Prometheus's HTTP transport are
fakes passed through constructors."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.adapters
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from requests.structures import CaseInsensitiveDict
from structlog.testing import capture_logs

from controller.adapters.prometheus import PrometheusClient, PrometheusSettings
from controller.api.analysis import Metric, TemplateArg
from controller.api.rollout import AnalysisArg, Measurement, Rollout
from controller.core import analysis as an
from controller.runtime.measure import PrometheusMeasurer, secret_reader
from tests.support.clock import FakeClock
from tests.support.manifests import rollout as rollout_doc

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMESPACE = "shop"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
TOKEN = "tok-8c1f7e2a9d"
PASSWORD = "pw-55aa31bd07"
SERVICE = "checkout-internal-7731"
SECRET_VALUES = (TOKEN, PASSWORD, SERVICE)


class FakeSecretApi:
    """``read_namespaced_secret`` over a dict: (namespace, name) -> {key: value}. A Secret
    absent from the dict is a 404, one listed in ``forbidden`` a 403."""

    def __init__(
        self,
        secrets: Mapping[tuple[str, str], Mapping[str, str | bytes]],
        forbidden: frozenset[str] = frozenset(),
    ) -> None:
        self.secrets = secrets
        self.forbidden = forbidden
        self.reads: list[tuple[str, str]] = []

    def read(self, name: str, namespace: str) -> client.V1Secret:
        self.reads.append((namespace, name))
        if name in self.forbidden:
            raise _api_error(403, f'secrets "{name}" is forbidden: User cannot get resource')
        data = self.secrets.get((namespace, name))
        if data is None:
            raise _api_error(404, f'secrets "{name}" not found')
        encoded = {
            k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode()
            for k, v in data.items()
        }
        return client.V1Secret(data=encoded)


def _api_error(status: int, message: str) -> ApiException:
    """The ApiException the Kubernetes client raises for an error Status."""
    exc = ApiException(status=status, reason="Forbidden" if status == 403 else "Not Found")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


class FakePrometheus(requests.adapters.BaseAdapter):
    """Prometheus's HTTP API: answers every query with ``reply`` and records what it was
    sent (the CA file's content is read while the request is in flight)."""

    def __init__(self, reply: tuple[int, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.reply = reply or (
            200,
            {"status": "success", "data": {"resultType": "vector", "result": [_sample("0")]}},
        )
        self.sent: list[requests.PreparedRequest] = []
        self.verify: list[Any] = []
        self.ca_seen: list[str] = []

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.sent.append(request)
        verify = kwargs.get("verify")
        self.verify.append(verify)
        if isinstance(verify, str):
            self.ca_seen.append(Path(verify).read_text())
        status, body = self.reply
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.encoding = "utf-8"
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        """Nothing to release."""

    def query(self, index: int = -1) -> str:
        """The PromQL text of a sent request."""
        request = self.sent[index]
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url or "").query))
        if "query" not in params and isinstance(request.body, str):
            params = dict(urllib.parse.parse_qsl(request.body))
        return params["query"]

    def authorization(self, index: int = -1) -> str | None:
        """The Authorization header of a sent request."""
        return self.sent[index].headers.get("Authorization")


def _sample(value: str) -> dict[str, Any]:
    """One vector sample."""
    return {"metric": {}, "value": [1_795_000_000, value]}


def rollout() -> Rollout:
    """A Rollout in namespace ``shop`` with a canary in progress."""
    doc = rollout_doc("checkout")
    doc["metadata"]["namespace"] = NAMESPACE
    doc["status"] = {"stableRevision": "aaa111", "canaryRevision": "bbb222"}
    return Rollout.model_validate(doc)


def metric(query: str = "vector(0)", **connection: Any) -> Metric:
    """A Prometheus metric that passes on 0, with the given connection fields."""
    return Metric.model_validate(
        {
            "name": "errors",
            "thresholdRange": {"max": 0.01},
            "provider": {
                "prometheus": {"address": "https://prom.test:9090", "query": query, **connection}
            },
        }
    )


def ref(name: str, key: str) -> dict[str, str]:
    """A secretKeyRef."""
    return {"name": name, "key": key}


SECRETS: dict[tuple[str, str], dict[str, str | bytes]] = {
    (NAMESPACE, "prom-token"): {"token": TOKEN},
    (NAMESPACE, "prom-basic"): {"username": "reader", "password": PASSWORD},
    (NAMESPACE, "prom-ca"): {"ca.crt": PEM},
    (NAMESPACE, "svc"): {"name": SERVICE},
    (NAMESPACE, "binary"): {"token": b"\xff\xfe\x00"},
    # The same names in another namespace must never be read for this Rollout.
    ("other", "prom-token"): {"token": "wrong-namespace"},
}


class Harness:
    """A measurer over fake Secrets and a fake Prometheus, recording the settings of
    every client it built."""

    def __init__(
        self,
        reply: tuple[int, dict[str, Any]] | None = None,
        secrets: Mapping[tuple[str, str], Mapping[str, str | bytes]] = SECRETS,
        forbidden: frozenset[str] = frozenset(),
    ) -> None:
        self.api = FakeSecretApi(secrets, forbidden)
        self.prometheus = FakePrometheus(reply)
        self.settings: list[PrometheusSettings] = []
        self.measurer = PrometheusMeasurer(
            secret_reader(self.api.read),
            clock=FakeClock(wall=T0),
            client_factory=self._client,
        )

    def _client(self, settings: PrometheusSettings) -> PrometheusClient:
        self.settings.append(settings)
        return PrometheusClient(settings, transport=self.prometheus, sleep=lambda _: None)

    def measure(
        self,
        m: Metric,
        template_args: tuple[TemplateArg, ...] = (),
        args: tuple[AnalysisArg, ...] = (),
    ) -> Measurement:
        due = [an.Due("step-1", m, template_args, args)]
        return self.measurer.measure(rollout(), due, T0)[("step-1", m.name)]


def secret_arg(name: str = "service", source: str = "svc", key: str = "name") -> TemplateArg:
    """A template argument read from key ``key`` of Secret ``source``."""
    return TemplateArg.model_validate(
        {"name": name, "valueFrom": {"secretKeyRef": ref(source, key)}}
    )


# -- values read from Secrets ---------------------------------------------------------------


def test_an_argument_comes_from_a_secret_key() -> None:
    """A template argument with valueFrom.secretKeyRef is read from the Rollout's namespace
    and rendered into the query (escaped, inside its string literal)."""
    h = Harness()
    result = h.measure(metric('sum(rate(errors{service="{{args.service}}"}[1m]))'), (secret_arg(),))
    assert result.phase == "Successful", result.message
    assert h.prometheus.query() == f'sum(rate(errors{{service="{SERVICE}"}}[1m]))'
    assert h.api.reads == [(NAMESPACE, "svc")]


def test_the_rollouts_secret_argument_overrides_the_templates_default() -> None:
    """An argument the Rollout passes from a Secret wins over the template's default."""
    h = Harness()
    default = TemplateArg.model_validate({"name": "service", "value": "default-svc"})
    given = AnalysisArg.model_validate(
        {"name": "service", "valueFrom": {"secretKeyRef": ref("svc", "name")}}
    )
    result = h.measure(metric('errors{service="{{args.service}}"}'), (default,), (given,))
    assert result.phase == "Successful", result.message
    assert SERVICE in h.prometheus.query()


def test_a_bearer_token_comes_from_a_secret() -> None:
    """auth.bearerToken is read from its Secret and sent as the Authorization header."""
    h = Harness()
    result = h.measure(metric(auth={"bearerToken": ref("prom-token", "token")}))
    assert result.phase == "Successful", result.message
    assert h.prometheus.authorization() == f"Bearer {TOKEN}"
    assert h.api.reads == [(NAMESPACE, "prom-token")]


def test_basic_auth_comes_from_a_secret() -> None:
    """auth.basic's username and password are read from their Secret keys."""
    h = Harness()
    basic = {"username": ref("prom-basic", "username"), "password": ref("prom-basic", "password")}
    result = h.measure(metric(auth={"basic": basic}))
    assert result.phase == "Successful", result.message
    expected = base64.b64encode(f"reader:{PASSWORD}".encode()).decode()
    assert h.prometheus.authorization() == f"Basic {expected}"


def test_a_ca_bundle_comes_from_a_secret_and_is_removed_after() -> None:
    """caSecret is written to a private temporary file that verifies the TLS connection
    while the query runs, and is gone once the measurement is taken."""
    h = Harness()
    result = h.measure(metric(caSecret=ref("prom-ca", "ca.crt")))
    assert result.phase == "Successful", result.message
    (verify,) = h.prometheus.verify
    assert isinstance(verify, str)
    assert h.prometheus.ca_seen == [PEM]
    assert not Path(verify).exists()


def test_without_a_ca_secret_the_system_trust_store_verifies() -> None:
    """No caSecret: no file is written and certificates are verified (verify=True)."""
    h = Harness()
    h.measure(metric())
    (verify,) = h.prometheus.verify
    assert verify is True or (isinstance(verify, str) and "stepwise-ca-" not in verify)
    assert h.api.reads == []


# -- a Secret that cannot be read ------------------------------------------------------------

WHERE = ("arg", "bearer", "basic", "ca")


def source(where: str, secret: str, key: str) -> tuple[dict[str, Any], tuple[TemplateArg, ...]]:
    """The connection fields and template arguments that read ``secret``/``key`` as an
    argument, a bearer token, a basic password or a CA bundle."""
    if where == "arg":
        return {}, (secret_arg(source=secret, key=key),)
    if where == "bearer":
        return {"auth": {"bearerToken": ref(secret, key)}}, ()
    if where == "basic":
        user = ref("prom-basic", "username")
        return {"auth": {"basic": {"username": user, "password": ref(secret, key)}}}, ()
    return {"caSecret": ref(secret, key)}, ()


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(
    ("secret", "key", "says"),
    [
        pytest.param("absent", "token", "Secret shop/absent not found", id="missing-secret"),
        pytest.param("prom-token", "nope", "Secret shop/prom-token has no key 'nope'", id="no-key"),
        pytest.param("locked", "token", "cannot read Secret shop/locked (key 'token')", id="403"),
        pytest.param("binary", "token", "Secret shop/binary key 'token' is not UTF-8", id="binary"),
    ],
)
def test_an_unreadable_secret_is_an_error_naming_the_secret_and_key(
    where: str, secret: str, key: str, says: str
) -> None:
    """A missing Secret, a missing key, a forbidden read or bytes that are not text: the
    measurement is Error (never an exception), its message names the metric, the Secret
    and the key, and Prometheus is not asked."""
    h = Harness(forbidden=frozenset({"locked"}))
    fields, template_args = source(where, secret, key)
    result = h.measure(metric(**fields), template_args)
    assert result.phase == "Error"
    assert result.message.startswith("errors: ")
    assert says in result.message
    assert repr(key) in result.message
    assert h.prometheus.sent == []


def test_the_other_keys_are_listed_when_the_key_is_missing() -> None:
    """A missing key's message lists the keys the Secret has (names only, never values)."""
    h = Harness()
    result = h.measure(metric(auth={"bearerToken": ref("prom-basic", "token")}))
    assert "(its keys: password, username)" in result.message
    assert PASSWORD not in result.message


def test_a_reader_that_raises_anything_gives_an_error_not_an_exception() -> None:
    """Whatever a Secret reader raises, the measurement is Error and the exception's text
    (which could hold a value) is neither in the message nor in the logs."""

    def broken(namespace: str, ref: Any) -> str:
        raise RuntimeError(f"boom {TOKEN}")

    measurer = PrometheusMeasurer(broken, clock=FakeClock(wall=T0))
    due = [an.Due("step-1", metric(auth={"bearerToken": ref("t", "k")}), (), ())]
    with capture_logs() as logs:
        result = measurer.measure(rollout(), due, T0)[("step-1", "errors")]
    assert result.phase == "Error"
    assert result.message == "errors: unexpected RuntimeError"
    assert TOKEN not in repr(logs)


# -- secret values never in logs or messages -----------------------------------------------


def _everything() -> tuple[Metric, tuple[TemplateArg, ...]]:
    """A metric whose argument, bearer token and CA all come from Secrets."""
    m = metric(
        'sum(rate(errors{service="{{args.service}}"}[1m]))',
        auth={"bearerToken": ref("prom-token", "token")},
        caSecret=ref("prom-ca", "ca.crt"),
    )
    return m, (secret_arg(),)


ECHO = (
    400,
    {
        "status": "error",
        "errorType": "bad_data",
        "error": f'1:20: parse error: unexpected "{SERVICE}" (Authorization: Bearer {TOKEN})',
    },
)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(None, id="answered"),
        pytest.param(ECHO, id="error-echoing-the-query-and-the-header"),
        pytest.param((500, {"status": "error", "errorType": "internal", "error": TOKEN}), id="5xx"),
    ],
)
def test_secret_values_never_reach_a_log_line_or_a_message(
    reply: tuple[int, dict[str, Any]] | None,
) -> None:
    """With the argument, the token and the CA from Secrets, no log line and no
    measurement message holds a Secret value, even when Prometheus echoes them back."""
    h = Harness(reply)
    m, args = _everything()
    with capture_logs() as logs:
        result = h.measure(m, args)
    assert logs, "the measurement is logged"
    text = repr(logs) + result.model_dump_json()
    for value in SECRET_VALUES:
        assert value not in text
    if reply is not None:
        assert result.phase == "Error"
        assert "***" in result.message


def test_basic_password_never_reaches_a_log_line() -> None:
    """A basic-auth password rejected by Prometheus is not logged nor in the message."""
    reply = (401, {"status": "error", "errorType": "unauthorized", "error": f"bad {PASSWORD}"})
    h = Harness(reply)
    basic = {"username": ref("prom-basic", "username"), "password": ref("prom-basic", "password")}
    with capture_logs() as logs:
        result = h.measure(metric(auth={"basic": basic}))
    assert result.phase == "Error"
    assert PASSWORD not in repr(logs) + result.message


def test_a_token_ending_in_a_newline_is_trimmed() -> None:
    """A bearer token Secret written with ``echo`` (a trailing newline) still works:
    HTTP headers cannot hold a newline, so the token is trimmed."""
    h = Harness(secrets={(NAMESPACE, "nl"): {"token": f"{TOKEN}\n"}})
    result = h.measure(metric(auth={"bearerToken": ref("nl", "token")}))
    assert result.phase == "Successful", result.message
    assert h.prometheus.authorization() == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "echoed",
    [
        pytest.param(f"{SERVICE}", id="trimmed"),
        pytest.param(f"{SERVICE}\\n", id="escaped-as-go-and-python-print-it"),
    ],
)
def test_a_secret_value_is_scrubbed_in_the_forms_an_error_shows_it(echoed: str) -> None:
    """An argument ending in a newline, echoed by Prometheus trimmed or escaped, is still
    scrubbed from the message and the logs."""
    secrets = {(NAMESPACE, "nl"): {"name": f"{SERVICE}\n"}}
    reply = (400, {"status": "error", "errorType": "bad_data", "error": f'bad "{echoed}"'})
    h = Harness(reply, secrets=secrets)
    with capture_logs() as logs:
        result = h.measure(metric('errors{service="{{args.service}}"}'), (secret_arg(source="nl"),))
    assert result.phase == "Error"
    assert SERVICE not in result.message + repr(logs)


def test_settings_reprs_hide_the_credentials() -> None:
    """The settings built from Secrets do not show the token or password in a repr."""
    h = Harness()
    h.measure(metric(auth={"bearerToken": ref("prom-token", "token")}))
    basic = {"username": ref("prom-basic", "username"), "password": ref("prom-basic", "password")}
    h.measure(metric(auth={"basic": basic}))
    shown = repr(h.settings)
    assert TOKEN not in shown
    assert PASSWORD not in shown
