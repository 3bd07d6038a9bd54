"""The exporter against real components: a tritonserver, the exporter command, and Prometheus.

A real tritonserver runs the metrics stand-in repository (tests/fixtures/metrics/stand_in_repo:
python models that publish the TensorRT-LLM metric families). The exporter runs as
``python -m generator.cli exporter`` with the config ``local_exporter_config`` renders, and a
real Prometheus (Debian package) scrapes Triton and the exporter every second with the rendered
rules loaded. After a known load every non-router recording rule and dashboard expression must
return data (the router's are checked in tests/exporter/test_monitoring_e2e.py); then the Triton is killed.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from generator.render.monitoring import local_exporter_config, local_prometheus_config, render_monitoring
from generator.spec import Stack, parse_spec
from tests.fixtures.metrics.observe import (
    expressions_without_data,
    query,
    scalar,
    shipped_expressions,
    start_exporter,
    start_prometheus,
    wait_for,
)
from tests.fixtures.metrics.stand_in_triton import RunningTriton, free_ports, running_stand_in, stop_group

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SPEC = """
apiVersion: tritonstack/v1
name: standin
models:
  - {name: tiny-chat, reference_engine: {}, tokenizer_dir: tok}
pools:
  - {name: chat, models: [tiny-chat]}
"""


@dataclass
class Live:
    stack: Stack
    triton: RunningTriton
    exporter_url: str
    prometheus_url: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("exporter-live")
    stack = parse_spec(SPEC)
    with running_stand_in(work) as triton:
        endpoints = {"chat": [("127.0.0.1", triton.http_port, triton.grpc_port, triton.metrics_port)]}
        exporter_port, prometheus_port = free_ports(2)
        config = work / "exporter.yaml"
        config.write_bytes(local_exporter_config(stack, endpoints, {"chat": [triton.pid]}))
        rendered = render_monitoring(stack)
        rule_files = []
        for name in ("recording.yml", "alerts.yml"):
            rule_files.append(work / name)
            rule_files[-1].write_bytes(rendered[f"monitoring/rules/{name}"])
        prometheus_yml = work / "prometheus.yml"
        prometheus_yml.write_bytes(
            local_prometheus_config(
                stack, endpoints, exporter=("127.0.0.1", exporter_port), rule_files=rule_files, scrape_interval="1s"
            )
        )
        exporter = start_exporter(config, exporter_port, work)
        prometheus = start_prometheus(prometheus_yml, prometheus_port, work)
        try:
            live = Live(stack, triton, f"http://127.0.0.1:{exporter_port}", f"http://127.0.0.1:{prometheus_port}")
            wait_for("exporter", lambda: httpx.get(f"{live.exporter_url}/-/healthy").status_code == 200)
            wait_for("prometheus", lambda: httpx.get(f"{live.prometheus_url}/-/ready").status_code == 200)
            yield live
        finally:
            stop_group(prometheus)
            stop_group(exporter)


def exporter_metrics(live: Live) -> str:
    response = httpx.get(f"{live.exporter_url}/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "5"})
    assert response.status_code == 200
    return response.text


def test_load_shows_up_in_the_exporter_with_exact_token_counts(live: Live) -> None:
    for input_ids, max_tokens in (([1, 2, 3], 5), ([4] * 20, 60), ([5] * 4, 7)):
        assert live.triton.infer("tiny-chat_ensemble", input_ids, max_tokens).status_code == 200
    assert live.triton.infer("tiny-chat_ensemble", [1], -1).status_code != 200
    text = exporter_metrics(live)
    labels = 'model="tiny-chat",pool="chat",replica="0"'
    assert f"tritonstack_generated_tokens_total{{{labels}}} 72.0" in text
    assert f"tritonstack_prompt_tokens_total{{{labels}}} 27.0" in text
    assert 'tritonstack_target_up{pool="chat",replica="0"} 1.0' in text
    # Real process attribution: the stand-in engine runs in a python backend stub of tiny-chat_tensorrt_llm.
    stub_rss = re.search(rf'tritonstack_model_resident_memory_bytes{{{labels},step="engine"}} (\S+)', text)
    assert stub_rss and float(stub_rss.group(1)) > 0
    server_rss = re.search(r'tritonstack_server_resident_memory_bytes{pool="chat",replica="0"} (\S+)', text)
    assert server_rss and float(server_rss.group(1)) > 0


def test_every_non_router_rule_and_dashboard_expression_returns_data(live: Live) -> None:
    wait_for(
        "two scrapes of the load",
        lambda: (scalar(live.prometheus_url, "count_over_time(tritonstack_generated_tokens_total[1m])") or 0) >= 3,
    )
    for _ in range(3):  # a little traffic while we query, so rates over the last minute move
        live.triton.infer("tiny-chat_ensemble", [9, 9], 3)
        time.sleep(1.1)
    expressions = [
        (where, expr, needs)
        for where, expr, needs in shipped_expressions(live.stack)
        if "tritonstack_router_" not in expr and needs != "nvml"
    ]
    assert len(expressions) >= 20
    assert expressions_without_data(live.prometheus_url, expressions) == []


def test_killed_triton_goes_down_and_the_exporter_keeps_answering(live: Live) -> None:
    os.killpg(live.triton.pid, signal.SIGKILL)
    text = exporter_metrics(live)
    assert 'tritonstack_target_up{pool="chat",replica="0"} 0.0' in text
    assert 'tritonstack_target_scrape_errors_total{pool="chat",replica="0"}' in text
    url = live.prometheus_url
    wait_for("Prometheus to see the replica down", lambda: scalar(url, 'tritonstack_target_up{pool="chat"} == 0') == 0)
    wait_for("Triton's own target down", lambda: scalar(url, 'up{job="triton"}') == 0)
    assert scalar(url, 'up{job="tritonstack-exporter"}') == 1
    # The down alert (for: 1m) turns pending within a rule evaluation or two; promtool tests the firing.
    wait_for("TritonstackTritonDown pending", lambda: query(url, 'ALERTS{alertname="TritonstackTritonDown"}'))
