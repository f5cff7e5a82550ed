"""Taking the measurements that are due: template the queries, ask Prometheus, judge.

The reconciler asks for the measurements ``core.analysis.due`` lists before it plans.
For each: the query variables are built (Rollout, namespace, revisions, Services, the
metric interval, and arguments from the Rollout or the template's defaults, Secret
values included), the query is rendered with escaping (:mod:`controller.core.promql`),
sent by :class:`controller.adapters.prometheus.PrometheusClient`, and the answer judged
by :mod:`controller.core.measurement` (or :mod:`controller.core.judge` for a
comparative judge). Nothing here raises: every failure becomes an Error measurement that
names the metric, and core's policies decide what it means. A Secret that cannot be read
(missing, no such key, forbidden, not text) is such an Error, and its message names the
Secret and the key; Secret values themselves are never logged nor put in a message (the
adapter scrubs credentials, and the Secret-valued arguments passed to it, in every form
an error text may show them).

The Secret reader and the Prometheus client are injected through the constructor (tests
pass fakes: a dict of Secrets, a client over a fake HTTP transport).
"""

from __future__ import annotations

import base64
import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import structlog
from kubernetes import client

from controller.adapters.prometheus import PrometheusClient, PrometheusSettings
from controller.adapters.retry import call_api
from controller.api.analysis import Metric, PrometheusConnection, TemplateArg
from controller.api.rollout import AnalysisArg, Measurement, Rollout, SecretKeyRef
from controller.clock import SYSTEM_CLOCK, Clock
from controller.core import analysis as an
from controller.core import judge, measurement, promql
from controller.errors import ApiError, NotFoundError, StepwiseError

log = structlog.get_logger()

SecretReader = Callable[[str, SecretKeyRef], str]
"""Reads one key of a Secret in a namespace (raises StepwiseError when it cannot, with a
message that names the Secret and the key but never the value)."""

ClientFactory = Callable[[PrometheusSettings], PrometheusClient]
"""Builds the Prometheus client for one measurement's settings."""


class Variables(NamedTuple):
    """What ``{{...}}`` placeholders of one measurement stand for."""

    values: dict[str, str]
    """``namespace``, ``rollout``, ``stableRevision``, ..., ``interval``, ``args.NAME``."""
    redact: tuple[str, ...]
    """Secret values among them, never to be logged nor put in a message."""


class ProviderTaker(Protocol):
    """Takes one measurement of a web or job metric (never raises)."""

    def __call__(
        self, rollout: Rollout, item: an.Due, variables: Variables
    ) -> measurement.Outcome: ...


def kube_secret_reader(api_client: client.ApiClient) -> SecretReader:
    """A SecretReader over the Kubernetes API."""
    core = client.CoreV1Api(api_client)
    return secret_reader(core.read_namespaced_secret)


def secret_reader(read: Callable[[str, str], client.V1Secret]) -> SecretReader:
    """A SecretReader over ``read(name, namespace)`` (``read_namespaced_secret``), under
    the API retry policy, with every failure a StepwiseError naming the Secret and key."""

    def reader(namespace: str, ref: SecretKeyRef) -> str:
        where = f"Secret {namespace}/{ref.name}"
        try:
            secret = call_api(lambda: read(ref.name, namespace))
        except NotFoundError:
            raise StepwiseError(f"{where} not found (wanted its key {ref.key!r})") from None
        except ApiError as exc:
            raise StepwiseError(f"cannot read {where} (key {ref.key!r}): {exc}") from None
        data = secret.data or {}
        if ref.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise StepwiseError(f"{where} has no key {ref.key!r} (its keys: {keys})")
        try:
            return base64.b64decode(data[ref.key]).decode()
        except ValueError:  # binascii.Error and UnicodeDecodeError; the value is not shown
            raise StepwiseError(f"{where} key {ref.key!r} is not UTF-8 text") from None

    return reader


def promql_duration(value: str | int) -> str:
    """A metric interval as a PromQL duration (``30`` → ``30s``, ``1m30s`` stays)."""
    if isinstance(value, int):
        return f"{value}s"
    return value


class PrometheusMeasurer:
    """Measures due metrics against Prometheus."""

    def __init__(
        self,
        secrets: SecretReader,
        *,
        default_address: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        client_factory: ClientFactory = PrometheusClient,
        web: ProviderTaker | None = None,
        job: ProviderTaker | None = None,
    ) -> None:
        self.secrets = secrets
        self.default_address = default_address
        self.clock = clock
        self.client_factory = client_factory
        self.others = {"web": web, "job": job}

    def measure(
        self, rollout: Rollout, due: list[an.Due], now: dt.datetime
    ) -> dict[tuple[str, str], Measurement]:
        """One judged measurement per due metric, keyed by (run, metric)."""
        out: dict[tuple[str, str], Measurement] = {}
        for item in due:
            started = self.clock.now()
            outcome = self.take(rollout, item)
            out[(item.run, item.metric.name)] = outcome.measurement(started, self.clock.now())
        return out

    def take(self, rollout: Rollout, item: an.Due) -> measurement.Outcome:
        """One judged measurement of one due metric (never raises)."""
        try:
            outcome = self._one(rollout, item)
        except Exception as exc:  # never into the decision logic; the text may hold a value
            log.error("measurement failed unexpectedly", error=type(exc).__name__)
            outcome = measurement.Outcome(
                "Error", None, f"{item.metric.name}: unexpected {type(exc).__name__}"
            )
        log.info(
            "measured",
            run=item.run,
            metric=item.metric.name,
            phase=outcome.phase,
            value=outcome.value if item.metric.provider.judge is None else None,
            message=outcome.message,
        )
        return outcome

    def _one(self, rollout: Rollout, item: an.Due) -> measurement.Outcome:
        metric = item.metric
        namespace = rollout.metadata.namespace or "default"
        try:
            variables, redact = self._variables(rollout, item, namespace)
        except (StepwiseError, ValueError) as exc:
            return measurement.Outcome("Error", None, f"{metric.name}: {exc}")
        provider = metric.provider
        if provider.kind in self.others:
            take = self.others[provider.kind]
            if take is None:
                return measurement.Outcome(
                    "Error", None, f"{metric.name}: this controller has no {provider.kind} provider"
                )
            return take(rollout, item, Variables(variables, redact))
        connection: PrometheusConnection | None = provider.prometheus or provider.judge
        assert connection is not None
        token_ref = connection.auth.bearer_token if connection.auth else None

        def credential(ref: SecretKeyRef) -> str:
            value = self.secrets(namespace, ref)
            # A token file written by ``echo`` ends in a newline, which no HTTP header
            # may hold; Prometheus trims its credentials files the same way.
            return value.strip() if ref is token_ref else value

        ca_dir: tempfile.TemporaryDirectory[str] | None = None
        try:
            ca_file = None
            if connection.ca_secret is not None:
                ca_dir = tempfile.TemporaryDirectory(prefix="stepwise-ca-")
                ca_path = Path(ca_dir.name) / "ca.pem"
                ca_path.write_text(self.secrets(namespace, connection.ca_secret))
                ca_file = str(ca_path)
            settings = PrometheusSettings.from_connection(
                connection,
                secret=credential,
                default_url=self.default_address,
                ca_file=ca_file,
            )
        except (StepwiseError, ValueError, OSError) as exc:
            if ca_dir is not None:
                ca_dir.cleanup()
            return measurement.Outcome("Error", None, f"{metric.name}: {exc}")
        prom = self.client_factory(settings)
        try:
            return self._query(prom, metric, variables, redact, rollout, item)
        except promql.TemplateError as exc:
            return measurement.Outcome("Error", None, f"{metric.name}: {exc}")
        finally:
            prom.close()
            if ca_dir is not None:
                ca_dir.cleanup()

    def _query(
        self,
        prom: PrometheusClient,
        metric: Metric,
        variables: dict[str, str],
        redact: tuple[str, ...],
        rollout: Rollout,
        item: an.Due,
    ) -> measurement.Outcome:
        def ask(query: str, at: dt.datetime | None = None) -> measurement.QueryResponse:
            return prom.query(
                promql.render(query, variables), metric=metric.name, redact=redact, at=at
            )

        provider = metric.provider
        if provider.prometheus is not None:
            samples = ask(metric.min_samples.query) if metric.min_samples else None
            return measurement.measure(ask(provider.prometheus.query), metric, samples)
        spec = provider.judge
        assert spec is not None
        # Every counter of one judge measurement is read at the same instant, so that
        # the readings belong together (core.judge differences them).
        at = self.clock.now()

        def read(query: str) -> measurement.QueryResponse:
            return ask(query, at)

        latency = spec.latency
        answers = judge.JudgeAnswers(
            canary_requests=read(spec.canary.requests),
            canary_errors=read(spec.canary.errors),
            stable_requests=read(spec.stable.requests),
            stable_errors=read(spec.stable.errors),
            canary_latency_requests=read(latency.canary.requests) if latency else None,
            canary_slow=read(latency.canary.slow) if latency else None,
            stable_latency_requests=read(latency.stable.requests) if latency else None,
            stable_slow=read(latency.stable.slow) if latency else None,
        )
        return judge.judge_measurement(metric.name, spec, answers, _latest(rollout, item))

    def _variables(
        self, rollout: Rollout, item: an.Due, namespace: str
    ) -> tuple[dict[str, str], tuple[str, ...]]:
        live, new = rollout.spec.strategy.services
        status = rollout.status
        variables = {
            "namespace": namespace,
            "rollout": rollout.metadata.name,
            "stableRevision": status.stable_revision or "",
            "canaryRevision": status.canary_revision or "",
            "stableService": live or "",
            "canaryService": new or "",
            "interval": promql_duration(item.metric.interval),
        }
        if rollout.spec.strategy.blue_green is not None:
            variables |= {"activeService": live or "", "previewService": new or ""}
        redact: list[str] = []
        # Template defaults first; the Rollout's values override them.
        merged: list[TemplateArg | AnalysisArg] = [*item.template_args, *item.args]
        for arg in merged:
            if arg.value is not None:
                variables[f"args.{arg.name}"] = arg.value
            elif (hashed := getattr(arg.value_from, "pod_template_hash_value", None)) is not None:
                # podTemplateHashValue (a Rollout argument): a revision, never a secret.
                stable, latest = status.stable_revision, status.canary_revision
                variables[f"args.{arg.name}"] = (stable if hashed == "Stable" else latest) or ""
            elif arg.value_from is not None and arg.value_from.secret_key_ref is not None:
                value = self.secrets(namespace, arg.value_from.secret_key_ref)
                variables[f"args.{arg.name}"] = value
                redact.append(value)
        return variables, tuple(redact)


def _latest(rollout: Rollout, item: an.Due) -> Measurement | None:
    for run in rollout.status.analysis_runs:
        if run.name == item.run and run.revision == rollout.status.canary_revision:
            for result in run.metrics:
                if result.name == item.metric.name and result.measurements:
                    return result.measurements[-1]
    return None
