"""deploy/'s Prometheus rules and Grafana dashboard name only metrics Glimpse exports: a
renamed metric must not leave an alert that can never fire or a panel that stays empty."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import glimpse.ops.metrics  # (registers every metric; its metrics are read below)

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
# Series a histogram or counter exports under its family's name.
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def is_exported(name: str, known: set[str]) -> bool:
    """A series name an exported family gives (a family without samples yet is known by its
    name alone: a counter's without `_total`)."""
    base = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)
    return name in known or base in known


def glimpse_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bglimpse_[a-z_]+", expr))


def test_alert_rules_name_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    known = exported()
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {"GlimpseQueueFallingBehind", "GlimpseServerErrors", "GlimpseNotReady"} <= {
        rule["alert"] for rule in alerts
    }
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        for name in glimpse_metrics(rule["expr"]):
            assert is_exported(name, known), (rule["alert"], name)


def test_dashboard_panels_name_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "glimpse-dashboard.json").read_text())
    known = exported()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = glimpse_metrics(target["expr"])
            assert names, panel["title"]
            used |= names
    assert {name for name in used if not is_exported(name, known)} == set()


def _unit(name: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values.setdefault(key, value)
            if key == "Environment":
                env_key, _, env_value = value.partition("=")
                values[env_key] = env_value
    return values


def test_the_units_run_glimpse_and_wait_for_its_drain_and_grace() -> None:
    api = _unit("glimpse-api@.service")
    assert api["ExecStart"].endswith("glimpse serve --no-workers --host 127.0.0.1 --port %i")
    drain = float(api["GLIMPSE_SHUTDOWN_DRAIN_SECONDS"])
    grace = float(api["GLIMPSE_SHUTDOWN_GRACE_SECONDS"])
    assert drain > 0 and int(api["TimeoutStopSec"]) > drain + grace
    worker = _unit("glimpse-worker@.service")
    assert worker["ExecStart"].endswith("glimpse worker")
    assert int(worker["TimeoutStopSec"]) > float(worker["GLIMPSE_SHUTDOWN_GRACE_SECONDS"])
    for unit in (api, worker):
        assert (
            unit["KillSignal"] == "SIGTERM"
            and unit["EnvironmentFile"] == "/etc/glimpse/glimpse.env"
        )
    # Every setting the example environment file names is one Glimpse has.
    from glimpse.config import Settings

    known = {f"GLIMPSE_{name.upper()}" for name in Settings.model_fields}
    example = (DEPLOY / "systemd" / "glimpse.env.example").read_text().splitlines()
    named = {
        line.lstrip("# ").split("=")[0] for line in example if "=" in line and "GLIMPSE_" in line
    }
    assert named and named <= known, named - known


# The values a label of Glimpse's takes, where an alert or a panel picks one out: one it never
# takes (a misspelt outcome, a backend by another name) matches nothing, and the alert never fires.
_LABEL_VALUES = {
    "outcome": {"done", "retried", "dead"},  # (what worker.run_job's runs end as)
    "backend": {"database", "storage", "queue", "cache"},  # (and database_replica_<n>)
}
_SELECTOR = re.compile(r"\b(glimpse_[a-z_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _label_names() -> dict[str, set[str]]:
    from prometheus_client.metrics import MetricWrapperBase

    names: dict[str, set[str]] = {}
    for metric in vars(glimpse.ops.metrics).values():
        if isinstance(metric, MetricWrapperBase):
            family = metric._name  # (a counter's without `_total`)
            for series in (family, *(family + s for s in _SUFFIXES)):
                names[series] = {*metric._labelnames, "le", "job", "instance"}
    return names


def _expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    dashboard = json.loads((DEPLOY / "grafana" / "glimpse-dashboard.json").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]] + [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ]


def test_alerts_and_panels_select_only_labels_and_values_glimpse_exports() -> None:
    names = _label_names()
    for expr in _expressions():
        for metric, matchers in _SELECTOR.findall(expr):
            for label, operator, value in _MATCHER.findall(matchers):
                assert label in names[metric], (metric, label)
                if operator == "=" and label in _LABEL_VALUES:
                    assert value in _LABEL_VALUES[label] or value.startswith("database_replica_"), (
                        metric,
                        label,
                        value,
                    )
