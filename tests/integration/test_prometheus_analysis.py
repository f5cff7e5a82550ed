"""Canary measurements end to end: two demo-app processes (stable v1, canary v2) under
load, scraped every second by the real Prometheus, measured through the adapter and
judged by core."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from structlog.testing import capture_logs

from controller.adapters.prometheus import PrometheusClient, PrometheusSettings
from controller.api.analysis import ComparativeJudge, Metric, TemplateArg
from controller.api.rollout import Measurement, Rollout
from controller.core import analysis as an
from controller.core.judge import JudgeAnswers, judge_measurement
from controller.core.measurement import Outcome, QueryResponse
from controller.core.promql import TemplateError, render
from controller.runtime.measure import PrometheusMeasurer, secret_reader
from localcluster import pki
from tests.support.demo import WINDOW, Demo
from tests.support.http import send_json
from tests.support.manifests import rollout as rollout_doc

pytestmark = pytest.mark.integration


SUCCESS_RATE = (
    'sum(rate(http_requests_total{service="{{args.service}}",version="{{canaryRevision}}",'
    'code!~"5.."}[{{interval}}])) / sum(rate(http_requests_total{service="{{args.service}}",'
    'version="{{canaryRevision}}"}[{{interval}}]))'
)


def poll(
    measure: Callable[[], Outcome], until: Callable[[Outcome], bool], timeout: float
) -> Outcome:
    """Measure every half second until ``until`` holds; the last outcome either way."""
    deadline = time.monotonic() + timeout
    outcome = measure()
    while not until(outcome) and time.monotonic() < deadline:
        time.sleep(0.5)
        outcome = measure()
    return outcome


@pytest.fixture
def healthy(demo: Demo) -> Iterator[Demo]:
    """The demo with both versions healthy, restored afterwards."""
    demo.canary.configure(errorRate=0.0)
    try:
        yield demo
    finally:
        demo.canary.configure(errorRate=0.0)


def success_rate(query: str = SUCCESS_RATE) -> Metric:
    """The canary's share of non-5xx responses must be at least 95%."""
    return Metric.model_validate(
        {
            "name": "success-rate",
            "interval": WINDOW,
            "thresholdRange": {"min": 0.95},
            "provider": {"prometheus": {"query": query}},
        }
    )


def test_healthy_canary_is_successful(healthy: Demo) -> None:
    """A canary serving no errors measures Successful, with a success rate of 1."""
    outcome = poll(lambda: healthy.measure(success_rate()), lambda o: o.phase == "Successful", 15)
    assert outcome.phase == "Successful", outcome
    assert float(outcome.value or "nan") == pytest.approx(1.0)


def test_erroring_canary_fails(healthy: Demo) -> None:
    """At 20% errors the canary's success rate falls below 95%: Failed, naming the value."""
    healthy.canary.configure(errorRate=0.2)
    outcome = poll(lambda: healthy.measure(success_rate()), lambda o: o.phase == "Failed", 20)
    assert outcome.phase == "Failed", outcome
    assert 0.6 < float(outcome.value or "nan") < 0.95
    assert "below thresholdRange.min 0.95" in outcome.message
    stable = healthy.measure(success_rate(), healthy.variables(canaryRevision="v1"))
    assert stable.phase == "Successful", stable  # the same query on v1 still passes


def test_comparative_judge_fails_an_erroring_canary(healthy: Demo) -> None:
    """The judge, fed the real cumulative counters every 2 s, fails a 20%-error canary
    after its baseline reading."""

    def counts(revision: str, errors: bool) -> str:
        code = ',code=~"5.."' if errors else ""
        return (
            f'sum by (instance) (http_requests_total{{service="{{{{args.service}}}}",'
            f'version="{{{{{revision}}}}}"{code}}})'
        )

    spec = ComparativeJudge.model_validate(
        {
            "address": healthy.prometheus.url,
            "canary": {
                "requests": counts("canaryRevision", False),
                "errors": counts("canaryRevision", True),
            },
            "stable": {
                "requests": counts("stableRevision", False),
                "errors": counts("stableRevision", True),
            },
        }
    )
    healthy.canary.configure(errorRate=0.2)
    variables = healthy.variables()

    def ask(query: str) -> QueryResponse:
        return healthy.client.query(render(query, variables), metric="errors-vs-stable")

    previous: Measurement | None = None
    outcome = Outcome("NoData")
    for look in range(8):  # the baseline, then at most seven 2 s intervals
        answers = JudgeAnswers(
            ask(spec.canary.requests),
            ask(spec.canary.errors),
            ask(spec.stable.requests),
            ask(spec.stable.errors),
        )
        outcome = judge_measurement("errors-vs-stable", spec, answers, previous)
        if look == 0:
            assert "baseline" in outcome.message, outcome
        if outcome.phase != "NoData":
            break
        previous = outcome.measurement(started_at=dt.datetime.now(dt.UTC))
        time.sleep(2)
    assert outcome.phase == "Failed", outcome
    assert "error rate worse than stable" in outcome.message


def test_paused_prometheus_is_an_error_quickly(demo: Demo) -> None:
    """With Prometheus down a measurement is Error within seconds; it recovers when it is back."""
    assert demo.measure(success_rate()).phase != "Error"
    demo.prometheus.pause()
    try:
        started = time.monotonic()
        outcome = demo.measure(success_rate())
        elapsed = time.monotonic() - started
    finally:
        demo.prometheus.resume()
    assert outcome.phase == "Error", outcome
    assert "query failed (unreachable)" in outcome.message
    assert "Connection refused" in outcome.message
    assert elapsed < 3.0
    back = poll(lambda: demo.measure(success_rate()), lambda o: o.phase != "Error", 15)
    assert back.phase != "Error", back


def test_promql_syntax_error_carries_prometheus_message(demo: Demo) -> None:
    """A broken query is an Error naming the metric and quoting Prometheus's parser."""
    broken = success_rate('sum(rate(http_requests_total{service="{{args.service}}"}[5s])')
    started = time.monotonic()
    outcome = demo.measure(broken)
    assert time.monotonic() - started < 2.0
    assert outcome.phase == "Error"
    assert outcome.message.startswith("success-rate: query failed (bad_data): ")
    assert "parse error: unclosed left parenthesis" in outcome.message


class _Secrets:
    """``read_namespaced_secret`` over a dict of Secret name -> {key: value}."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets

    def read(self, name: str, namespace: str) -> client.V1Secret:
        data = self.secrets[name]
        return client.V1Secret(
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        )


def _measure_through_the_runtime(
    demo: Demo, query: str, secrets: dict[str, dict[str, str]], *, metric: str
) -> Measurement:
    """One measurement as the controller takes it (runtime.measure), with template
    argument ``v`` read from key ``v`` of Secret ``args``."""
    measurer = PrometheusMeasurer(
        secret_reader(_Secrets(secrets).read), default_address=demo.prometheus.url
    )
    m = Metric.model_validate(
        {
            "name": metric,
            "thresholdRange": {"min": 0.5},
            "provider": {"prometheus": {"query": query}},
        }
    )
    arg = TemplateArg.model_validate(
        {"name": "v", "valueFrom": {"secretKeyRef": {"name": "args", "key": "v"}}}
    )
    doc = rollout_doc("app")
    doc["metadata"]["namespace"] = "shop"
    due = [an.Due("step-1", m, (arg,), ())]
    return measurer.measure(Rollout.model_validate(doc), due, dt.datetime.now(dt.UTC))[
        ("step-1", metric)
    ]


def test_the_runtime_names_the_metric_and_scrubs_a_secret_prometheus_echoes(demo: Demo) -> None:
    """Through the runtime's measurer, a query Prometheus rejects is an Error whose message
    starts with the metric's name and carries Prometheus's text; a Secret-valued argument
    that Prometheus quotes back (an invalid regex) is scrubbed from it and from the logs."""
    secret = "(unclosed-s3cr3t-7f"
    query = 'label_replace(vector(1), "v", "x", "", "{{args.v}}")'
    with capture_logs() as logs:
        result = _measure_through_the_runtime(
            demo, query, {"args": {"v": secret}}, metric="regex-check"
        )
    assert result.phase == "Error", result
    assert result.message.startswith("regex-check: query failed ("), result.message
    assert "invalid regular expression in label_replace(): ***" in result.message
    assert secret not in result.message
    assert secret not in repr(logs)


def test_the_runtime_keeps_an_injected_secret_argument_a_label_value(demo: Demo) -> None:
    """An argument from a Secret carrying ``"} or vector(1) #`` matches no series through
    the runtime's measurer: NoData, never the injected 1."""
    query = 'sum(up{job="{{args.v}}"})'
    result = _measure_through_the_runtime(
        demo, query, {"args": {"v": '"} or vector(1) #'}}, metric="up-check"
    )
    assert (result.phase, result.value) == ("NoData", None), result


INJECTIONS = [
    '"} or vector(1) #',
    'demo"} or vector(1) #',
    '\\"} or vector(1) #',
    '\\\\"} or vector(1) #',
    '"} or vector(1)\n#',
    "'} or vector(1) #",
    "` or vector(1) #",
]


@pytest.mark.parametrize("value", INJECTIONS, ids=repr)
def test_injected_values_stay_label_values(demo: Demo, value: str) -> None:
    """A hostile service name matches no series (NoData), never the injected vector(1)."""
    outcome = demo.measure(success_rate(), demo.variables(**{"args.service": value}))
    assert outcome == Outcome(
        "NoData", None, "success-rate: the query returned an empty vector (no series)"
    )


ROUND_TRIP = [
    *INJECTIONS,
    "plain",
    "tab\tnewline\nCR\r",
    "nul\x00bell\x07",
    "é ü 日本 😀",
    "\\",
    "",
]


@pytest.mark.parametrize("quote", ['"', "'", "`"], ids=["double", "single", "raw"])
@pytest.mark.parametrize("value", ROUND_TRIP, ids=repr)
def test_prometheus_reads_back_exactly_the_value(demo: Demo, quote: str, value: str) -> None:
    """Prometheus's parser decodes each rendered literal to exactly the value, or it is refused."""
    # label_replace copies the literal into a label, which the answer carries back
    template = f'label_replace(vector(1), "v", {quote}{{{{args.v}}}}{quote}, "", "")'
    try:
        query = render(template, {"args.v": value})
    except TemplateError:
        assert quote == "`"
        return
    answer = demo.client.query(query)
    assert answer.error is None, answer.error
    assert answer.result[0]["metric"].get("v", "") == value


# -- TLS -------------------------------------------------------------------------------


class _Stub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        send_json(self, {"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}})

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def https_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS stand-in for Prometheus with a certificate from a private CA."""
    certs = pki.generate(tmp_path_factory.mktemp("pki"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.serving_cert, certs.serving_key)
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", certs.ca_cert
    finally:
        server.shutdown()
        server.server_close()


def test_tls_with_a_private_ca(https_prometheus: tuple[str, Path]) -> None:
    """The CA file verifies the certificate; without it the query is a TLS error."""
    url, ca = https_prometheus
    trusted = PrometheusClient(PrometheusSettings(url=url, ca_file=str(ca)))
    assert trusted.query("1").result_type == "scalar"
    untrusted = PrometheusClient(PrometheusSettings(url=url)).query("1")
    assert untrusted.error is not None
    assert untrusted.error.kind == "tls"
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error.message


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_insecure_is_explicit(https_prometheus: tuple[str, Path]) -> None:
    """insecureSkipVerify accepts the unknown certificate (urllib3 warns every time)."""
    url, _ = https_prometheus
    insecure = PrometheusClient(PrometheusSettings(url=url, insecure_skip_verify=True))
    assert insecure.query("1").result_type == "scalar"
