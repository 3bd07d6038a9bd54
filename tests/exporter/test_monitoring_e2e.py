"""End to end: the quickstart stack on the reference engine, the router, the exporter and Prometheus.

A load of chat completions through the router (official openai client, streaming and not, the
aggregated model); then every recording rule and every dashboard expression
is evaluated against the live Prometheus and must return data. This is how "No data" panels are
caught without a Grafana server. Expressions marked ``needs: nvml`` need an NVIDIA driver and are
only run for syntax here.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
import yaml

from generator.render.deploy import render_deploy
from generator.render.monitoring import local_exporter_config, local_prometheus_config, render_monitoring
from generator.render.options import RenderOptions
from generator.render.routes import local_routes, render_routes
from generator.spec import Stack
from generator.spec.deploy import PoolAutoscaling, PoolScaling
from tests.fixtures.metrics.observe import (
    expressions_without_data,
    query,
    scalar,
    shipped_expressions,
    start_exporter,
    start_process,
    start_prometheus,
    substitute,
    wait_for,
)
from tests.fixtures.metrics.stand_in_triton import free_ports, stop_group
from tests.support.paths import EXAMPLES
from tests.support.stack import RunningStack

pytestmark = [pytest.mark.triton, pytest.mark.slow]


@dataclass
class Observed:
    stack: Stack
    router_url: str
    exporter_url: str
    prometheus_url: str


@pytest.fixture(scope="module")
def observed(running_quickstart: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    work = tmp_path_factory.mktemp("monitoring-e2e")
    launcher, stack = running_quickstart.launcher, running_quickstart.stack
    endpoints = launcher.endpoints()
    router_port, exporter_port, prometheus_port = free_ports(3)
    routes = work / "local" / "router" / "routes.yaml"
    routes.parent.mkdir(parents=True)
    routes.write_bytes(local_routes(stack, endpoints, RenderOptions(EXAMPLES, work / "local")))
    exporter_yaml = work / "exporter.yaml"
    exporter_yaml.write_bytes(local_exporter_config(stack, endpoints, launcher.pids()))
    rendered = render_monitoring(stack)
    rule_files = []
    for name in ("recording.yml", "alerts.yml"):
        rule_files.append(work / name)
        rule_files[-1].write_bytes(rendered[f"monitoring/rules/{name}"])
    prometheus_yml = work / "prometheus.yml"
    config = yaml.safe_load(
        local_prometheus_config(
            stack,
            endpoints,
            exporter=("127.0.0.1", exporter_port),
            router=("127.0.0.1", router_port),
            rule_files=rule_files,
            scrape_interval="1s",
        )
    )
    # The Prometheus Operator labels every target scraped through a ServiceMonitor with its
    # namespace; the KEDA queries select on it, so the targets here carry it too.
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            group.setdefault("labels", {})["namespace"] = stack.deploy.namespace
    prometheus_yml.write_text(yaml.safe_dump(config, sort_keys=False))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            start_process(
                [sys.executable, "-m", "generator.cli", "router", "--config", str(routes),
                 "--host", "127.0.0.1", "--port", str(router_port)],
                work / "router.log",
            )
        )  # fmt: skip
        processes.append(start_exporter(exporter_yaml, exporter_port, work))
        processes.append(start_prometheus(prometheus_yml, prometheus_port, work))
        result = Observed(
            stack,
            f"http://127.0.0.1:{router_port}",
            f"http://127.0.0.1:{exporter_port}",
            f"http://127.0.0.1:{prometheus_port}",
        )
        wait_for("router", lambda: httpx.get(f"{result.router_url}/ready").status_code == 200)
        wait_for("exporter", lambda: httpx.get(f"{result.exporter_url}/-/healthy").status_code == 200)
        wait_for("prometheus", lambda: httpx.get(f"{result.prometheus_url}/-/ready").status_code == 200)
        yield result
    finally:
        for process in reversed(processes):
            stop_group(process)


# Both models: tiny-chat (aggregated) and tiny-pd (prefill → decode), so every pool has traffic.
LOAD_MODELS = ("tiny-chat", "tiny-pd")


def load(observed: Observed, rounds: int) -> None:
    client = openai.OpenAI(base_url=f"{observed.router_url}/v1", api_key="unused", max_retries=0, timeout=60)
    for index in range(rounds):
        for model in LOAD_MODELS:
            messages = [{"role": "user", "content": f"count to {index + 3}, please"}]
            stream = client.chat.completions.create(model=model, messages=messages, max_tokens=12, stream=True)
            assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            reply = client.chat.completions.create(model=model, messages=messages, max_tokens=8)
            assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_every_rule_and_dashboard_expression_returns_data(observed: Observed) -> None:
    load(observed, rounds=3)
    url = observed.prometheus_url
    wait_for(
        "three scrapes of the load",
        lambda: (scalar(url, "min(count_over_time(tritonstack_generated_tokens_total[1m]))") or 0) >= 3
        and (scalar(url, "count_over_time(tritonstack_router_requests_total[1m])") or 0) >= 3,
    )
    load(observed, rounds=1)  # traffic inside the last minute, so every rate() moves
    time.sleep(2.5)
    expressions = shipped_expressions(observed.stack)
    for _, expr, needs in expressions:
        if needs == "nvml":
            query(url, substitute(expr))  # runs (no NVIDIA driver here, so no data)
    with_data = [e for e in expressions if e[2] != "nvml"]
    assert len(with_data) >= 28
    assert expressions_without_data(url, with_data) == []


def test_the_exporter_covers_every_pool_and_replica(observed: Observed) -> None:
    text = httpx.get(f"{observed.exporter_url}/metrics").text
    for pool, replicas in (("chat", 2), ("pd-prefill", 1), ("pd-decode", 1)):
        for replica in range(replicas):
            assert f'tritonstack_target_up{{pool="{pool}",replica="{replica}"}} 1.0' in text
    # the reference engine runs in python backend stubs: its host memory is attributed per model
    for model, pool in (("tiny-chat", "chat"), ("tiny-pd", "pd-prefill"), ("tiny-pd", "pd-decode")):
        assert f'tritonstack_model_resident_memory_bytes{{model="{model}",pool="{pool}",replica="0",step="engine"}}' in text


def _scaled_objects(stack: Stack, out_dir) -> list[dict]:
    """The quickstart's ScaledObjects as `tritonstack render` writes them, every trigger enabled."""
    scaling = PoolAutoscaling(defaults=PoolScaling(min_replicas=0, max_replicas=4, tokens_per_second=100))
    scaled = stack.model_copy(update={"deploy": stack.deploy.model_copy(update={"autoscaling": scaling})})
    options = RenderOptions(EXAMPLES, out_dir)
    siblings = {**render_routes(scaled, options), **render_monitoring(scaled)}
    files = render_deploy(scaled, siblings, options)
    return [doc for doc in yaml.safe_load_all(files["deploy/k8s/base/autoscaling.yaml"]) if doc]


def test_scaled_object_queries_return_data_from_the_loaded_stack(observed: Observed, tmp_path) -> None:
    """Every trigger query KEDA would send, run against the real Prometheus scraping the stack."""
    load(observed, rounds=2)
    url = observed.prometheus_url
    wait_for("the load's tokens in Prometheus", lambda: (scalar(url, "sum(tritonstack_generated_tokens_total)") or 0) > 0)
    load(observed, rounds=1)
    time.sleep(2.5)
    objects = _scaled_objects(observed.stack, tmp_path / "build")
    assert {o["metadata"]["name"] for o in objects} == {"chat", "pd-prefill", "pd-decode"}
    empty = []
    for scaled in objects:
        for trigger in scaled["spec"]["triggers"]:
            result = query(url, trigger["metadata"]["query"])
            if not result:
                empty.append((scaled["metadata"]["name"], trigger["name"], trigger["metadata"]["query"]))
            elif trigger["name"] in ("tokens-per-second", "wake-from-zero"):
                assert float(result[0]["value"][1]) > 0, (scaled["metadata"]["name"], trigger["name"])
    assert empty == []
