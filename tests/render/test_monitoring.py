"""Rendered monitoring output: promtool on rules and configs, dashboards' structure, determinism."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from generator.exporter.catalogue import CATALOGUE
from generator.exporter.config import parse_config
from generator.render.monitoring import local_exporter_config, local_prometheus_config, render_monitoring
from generator.resources import MONITORING_ROOT
from generator.spec import load_spec
from tests.support.paths import EXAMPLES

ROUTER_SERIES = {  # generator/router/metrics.py
    "tritonstack_router_requests_total",
    "tritonstack_router_time_to_first_token_seconds_bucket",
    "tritonstack_router_inter_token_latency_seconds_bucket",
    "tritonstack_router_request_duration_seconds_bucket",
    "tritonstack_router_prompt_tokens_total",
    "tritonstack_router_generated_tokens_total",
    "tritonstack_router_replica_inflight_requests",
}
ENDPOINTS = {
    "chat": [("127.0.0.1", 8000, 8001, 8002), ("127.0.0.1", 9000, 9001, 9002)],
    "pd-prefill": [("127.0.0.1", 8100, 8101, 8102)],
    "pd-decode": [("127.0.0.1", 8200, 8201, 8202)],
}


@pytest.fixture(scope="module")
def stack():
    return load_spec(EXAMPLES / "quickstart.yaml")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=cwd)


def test_rules_pass_promtool_and_every_alert_is_unit_tested() -> None:
    rules = [str(MONITORING_ROOT / "rules" / name) for name in ("recording.yml", "alerts.yml")]
    checked = promtool("check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = sorted(str(p) for p in (MONITORING_ROOT / "tests").glob("*.yml"))
    tested = promtool("test", "rules", *tests)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = set(re.findall(r"^\s+- alert: (\w+)", (MONITORING_ROOT / "rules" / "alerts.yml").read_text(), re.M))
    test_text = (MONITORING_ROOT / "tests" / "alerts_test.yml").read_text()
    for alert in alerts:
        firing = re.search(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels", test_text)
        quiet = re.search(rf"alertname: {alert}, exp_alerts: \[\]", test_text)
        assert firing and quiet, f"{alert}: needs a firing and a quiet case in alerts_test.yml"


def test_rendered_configs_pass_promtool(stack, tmp_path: Path) -> None:
    files = render_monitoring(stack)
    for relative, content in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(content)
    checked = promtool("check", "config", str(tmp_path / "monitoring" / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    local = tmp_path / "local.yml"
    local.write_bytes(
        local_prometheus_config(
            stack,
            ENDPOINTS,
            exporter=("127.0.0.1", 9400),
            router=("127.0.0.1", 9000),
            rule_files=[tmp_path / "monitoring" / "rules" / "alerts.yml"],
        )
    )
    checked = promtool("check", "config", str(local))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_exporter_configs_load_and_name_every_replica(stack) -> None:
    kubernetes = parse_config(render_monitoring(stack)["monitoring/exporter.yaml"].decode())
    assert kubernetes.pools["chat"].dns is not None
    assert kubernetes.pools["chat"].dns.name == "chat-headless.tritonstack.svc.cluster.local"
    assert kubernetes.pools["pd-decode"].models == ["tiny-pd"]
    local = parse_config(local_exporter_config(stack, ENDPOINTS, {"chat": [11, 12]}).decode())
    assert [(r.metrics, r.pid) for r in local.pools["chat"].replicas] == [(8002, 11), (9002, 12)]
    assert [(r.metrics, r.pid) for r in local.pools["pd-prefill"].replicas] == [(8102, None)]


def test_rendering_is_deterministic_and_rules_are_copied(stack) -> None:
    first, second = render_monitoring(stack), render_monitoring(stack)
    assert first == second
    assert first["monitoring/rules/alerts.yml"] == (MONITORING_ROOT / "rules" / "alerts.yml").read_bytes()


def test_dashboard_is_well_formed_and_queries_only_published_series(stack) -> None:
    board = json.loads(render_monitoring(stack)["monitoring/dashboards/quickstart-overview.json"])
    assert len(board["uid"]) <= 40
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "model", "pool"}
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    published = {spec.name for spec in CATALOGUE} | ROUTER_SERIES
    titles = [panel["title"] for panel in board["panels"] if panel["type"] != "row"]
    for wanted in ("Generated tokens/s", "Time to first token", "Inter-token latency", "KV cache usage",
                   "Host memory per model and pool", "Replica up", "Queue time"):  # fmt: skip
        assert any(title.startswith(wanted) for title in titles), wanted
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            expr = target["expr"]
            assert set(re.findall(r"\$(\w+)", expr)) <= variables | {"__rate_interval"}, expr
            names = set(re.findall(r"\b(tritonstack_[a-z_]+)", expr))
            assert names and names <= published, (panel["title"], names - published)
