"""Collector unit tests: fixtures of real /metrics text in, exact exporter samples out.

``triton_stand_in_*.txt`` were captured from a real tritonserver (tests/fixtures/metrics/
stand_in_triton.py); ``triton_trtllm_cpp_gpu.txt`` is hand-written in the C++ backend's shape.
Sources the collector reads are injected (fetch, processes, NVML, meminfo), as it is built for.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from generator.errors import RuntimeSetupError
from generator.exporter.catalogue import CATALOGUE
from generator.exporter.collector import TritonstackCollector
from generator.exporter.config import parse_config
from generator.exporter.gpu_memory import MemInfo, Nvml
from generator.exporter.processes import ProcessReadError, ServerProcesses, stub_model
from generator.exporter.server import TargetFetchError
from generator.exporter.triton_metrics import TritonParseError, parse_triton_metrics, samples
from tests.support import paths
from tests.support.nvml import GIB, nvml_double

FIXTURES = paths.FIXTURES / "metrics"
LOADED = (FIXTURES / "triton_stand_in_loaded.txt").read_text()
CPP_GPU = (FIXTURES / "triton_trtllm_cpp_gpu.txt").read_text()


def config(pools: str) -> object:
    return parse_config("apiVersion: tritonstack/exporter-v1\nstack: t\nexporter: {upstream_timeout_s: 2.0}\npools:\n" + pools)


CHAT_TWO_REPLICAS = """
  chat:
    role: aggregated
    models: [tiny-chat]
    replicas:
      - {host: 10.0.0.1, metrics: 8002, pid: 100}
      - {host: 10.0.0.2, metrics: 8002}
"""


def scrape(collector: TritonstackCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def make(cfg, executor, pages: dict[str, str | Exception], **kwargs) -> TritonstackCollector:
    def fetch(url: str, timeout: float) -> str:
        page = pages[url]
        if isinstance(page, Exception):
            raise page
        return page

    kwargs.setdefault("meminfo", lambda: MemInfo(total_bytes=128 * GIB, available_bytes=100 * GIB))
    kwargs.setdefault("memory_pressure", lambda: 1.5)
    kwargs.setdefault("read_processes", lambda pid: ServerProcesses(server_pid=pid, server_rss=0))
    return TritonstackCollector(cfg, fetch=fetch, resolve=lambda name: [], executor=executor, **kwargs)


# --- parsing ---------------------------------------------------------------------------------------


def test_captured_triton_text_gives_exact_values_per_step() -> None:
    values = parse_triton_metrics(LOADED, frozenset({"tiny-chat"}))
    # Load behind the capture: prompts of 3 and 20 tokens generating 5 and 60, plus one failed request.
    assert values.engine["tiny-chat"] == {
        "prompt_tokens": 23.0,
        "generated_tokens": 65.0,
        "finished_requests": 2.0,
        "waiting": 0.0,
        "max_active": 8.0,
        "active": 0.0,
        "kv_fraction": 0.046875,
        "kv_used": 3.0,
        "kv_free": 61.0,
        "iterations": 65.0,
    }
    entry = values.steps[("tiny-chat", "entry")]
    assert entry["success"] == 2.0
    assert entry["failure"] == 2.0  # Triton 2.51 counts the failed ensemble request under two reasons' sum
    assert entry["queue_seconds"] == pytest.approx(8e-6)
    assert values.steps[("tiny-chat", "engine")]["compute_seconds"] == pytest.approx(0.034969)
    assert set(values.steps) == {("tiny-chat", "entry"), ("tiny-chat", "engine")}


def test_models_outside_the_pool_are_ignored() -> None:
    assert parse_triton_metrics(LOADED, frozenset({"other-model"})).steps == {}


def test_cpp_backend_shape_sums_gpus_and_ignores_foreign_models() -> None:
    values = parse_triton_metrics(CPP_GPU, frozenset({"llama-3.1-8b"}))
    engine_step = values.steps[("llama-3.1-8b", "engine")]
    assert engine_step["success"] == 42.0  # two gpu_uuid series summed
    assert engine_step["queue_seconds"] == pytest.approx(2.0)
    assert engine_step["pending"] == 3.0
    assert values.steps[("llama-3.1-8b", "entry")] == {"success": 41.0, "failure": 3.0}
    assert values.steps[("llama-3.1-8b", "preprocessing")] == {"success": 42.0}
    assert values.engine["llama-3.1-8b"] == {
        "active": 9.0,
        "waiting": 3.0,
        "max_active": 64.0,
        "kv_used": 6000.0,
        "kv_free": 2000.0,
        "iterations": 123456.0,
        "prompt_tokens": 21000.0,
        "generated_tokens": 8400.0,
        "finished_requests": 42.0,
    }
    assert not any(model == "someone-elses" for model, _ in values.steps)


def test_label_escapes_and_garbage() -> None:
    assert list(samples('a{x="q\\"u\\\\o\\nx",y="2",} 1.5 123\nb 2\n')) == [
        ("a", {"x": 'q"u\\o\nx', "y": "2"}, 1.5),
        ("b", {}, 2.0),
    ]
    with pytest.raises(TritonParseError, match="not Prometheus text"):
        list(samples("<html><body>502 Bad Gateway</body></html>"))
    with pytest.raises(TritonParseError, match="not a number"):
        list(samples("nv_inference_count{model=\"m\"} lots"))


def test_stub_command_line_names_its_model() -> None:
    captured = (FIXTURES / "stub_cmdlines.txt").read_text().split()
    assert stub_model(captured) == "tiny-chat_tensorrt_llm"
    assert stub_model(["/usr/bin/python3", "/repo/x_bls/1/model.py"]) is None


# --- the collector ---------------------------------------------------------------------------------


def test_collector_publishes_pool_values_and_process_memory(executor) -> None:
    cfg = config(CHAT_TWO_REPLICAS)
    processes = ServerProcesses(
        server_pid=100,
        server_rss=300,
        stub_rss={"tiny-chat_tensorrt_llm": 1000, "tiny-chat_preprocessing": 70, "other_bls": 5},
        stub_pids={101: "tiny-chat_tensorrt_llm"},
    )
    collector = make(
        cfg,
        executor,
        {"http://10.0.0.1:8002/metrics": LOADED, "http://10.0.0.2:8002/metrics": LOADED},
        read_processes=lambda pid: processes,
    )
    got = scrape(collector)
    for replica in ("0", "1"):
        labels = {"model": "tiny-chat", "pool": "chat", "replica": replica}
        assert got[key("tritonstack_generated_tokens_total", **labels)] == 65.0
        assert got[key("tritonstack_prompt_tokens_total", **labels)] == 23.0
        assert got[key("tritonstack_kv_cache_blocks", state="used", **labels)] == 3.0
        assert got[key("tritonstack_kv_cache_usage_ratio", **labels)] == 0.046875
        assert got[key("tritonstack_triton_requests_total", step="entry", outcome="failure", **labels)] == 2.0
        assert got[key("tritonstack_target_up", pool="chat", replica=replica)] == 1.0
    assert got[key("tritonstack_server_resident_memory_bytes", pool="chat", replica="0")] == 300.0
    stub = {"model": "tiny-chat", "pool": "chat", "replica": "0"}
    assert got[key("tritonstack_model_resident_memory_bytes", step="engine", **stub)] == 1000.0
    assert got[key("tritonstack_model_resident_memory_bytes", step="preprocessing", **stub)] == 70.0
    assert not any(k[0] == "tritonstack_model_resident_memory_bytes" and ("model", "other") in k[1] for k in got)
    # replica 1 has no PID: no process series, and no invented zero
    assert key("tritonstack_server_resident_memory_bytes", pool="chat", replica="1") not in got
    assert got[key("tritonstack_exporter_source_up", source="processes")] == 1.0
    assert got[key("tritonstack_memory_pressure_stalled_seconds_total")] == 1.5


def test_a_broken_target_is_down_and_counted_while_others_answer(executor) -> None:
    cfg = config(CHAT_TWO_REPLICAS)
    pages: dict[str, str | Exception] = {
        "http://10.0.0.1:8002/metrics": "<html>oops</html>",
        "http://10.0.0.2:8002/metrics": LOADED,
    }
    collector = make(cfg, executor, pages)
    first = scrape(collector)
    pages["http://10.0.0.1:8002/metrics"] = TargetFetchError("connection refused")
    second = scrape(collector)
    assert first[key("tritonstack_target_up", pool="chat", replica="0")] == 0.0
    assert first[key("tritonstack_target_scrape_errors_total", pool="chat", replica="0")] == 1.0
    assert second[key("tritonstack_target_scrape_errors_total", pool="chat", replica="0")] == 2.0
    assert second[key("tritonstack_target_up", pool="chat", replica="1")] == 1.0
    assert second[key("tritonstack_generated_tokens_total", model="tiny-chat", pool="chat", replica="1")] == 65.0
    assert not any(k[0] == "tritonstack_generated_tokens_total" and ("replica", "0") in k[1] for k in second)


def test_a_target_slower_than_the_budget_is_down_without_holding_the_scrape(executor) -> None:
    cfg = config(CHAT_TWO_REPLICAS)
    release = threading.Event()

    def fetch(url: str, timeout: float) -> str:
        if url.startswith("http://10.0.0.1"):
            release.wait(30)  # hangs until the test ends
            raise TargetFetchError("released")
        return LOADED

    collector = TritonstackCollector(
        cfg, fetch=fetch, resolve=lambda n: [], executor=executor, read_processes=lambda pid: ServerProcesses(pid, 1)
    )
    try:
        with collector.budget(0.3):
            got = scrape(collector)
    finally:
        release.set()
    assert got[key("tritonstack_target_up", pool="chat", replica="0")] == 0.0
    assert got[key("tritonstack_target_up", pool="chat", replica="1")] == 1.0


def test_dns_pools_label_replicas_by_address(executor) -> None:
    cfg = config("""
  chat:
    role: aggregated
    models: [tiny-chat]
    dns: {name: chat-headless.ns.svc.cluster.local, metrics: 8002}
""")
    collector = TritonstackCollector(
        cfg,
        fetch=lambda url, timeout: LOADED,
        resolve=lambda name: ["10.1.0.7", "10.1.0.5"],
        executor=executor,
    )
    got = scrape(collector)
    assert got[key("tritonstack_target_up", pool="chat", replica="10.1.0.5")] == 1.0
    assert got[key("tritonstack_target_up", pool="chat", replica="10.1.0.7")] == 1.0
    assert got[key("tritonstack_exporter_source_up", source="dns:chat")] == 1.0


def test_a_vanished_server_pid_is_a_failed_source_not_a_crash(executor) -> None:
    cfg = config(CHAT_TWO_REPLICAS)

    def gone(pid: int) -> ServerProcesses:
        raise ProcessReadError(f"tritonserver PID {pid}: NoSuchProcess")

    collector = make(cfg, executor, {"http://10.0.0.1:8002/metrics": LOADED, "http://10.0.0.2:8002/metrics": LOADED}, read_processes=gone)
    got = scrape(collector)
    assert got[key("tritonstack_exporter_source_up", source="processes")] == 0.0
    assert got[key("tritonstack_target_up", pool="chat", replica="0")] == 1.0


# --- NVML: a discrete GPU and a unified-memory GPU (GB10), through a stand-in NVML module ------------


@pytest.mark.parametrize("unified", [False, True], ids=["discrete", "unified-gb10"])
def test_gpu_memory_is_reported_or_flagged_never_a_silent_zero(executor, unified: bool) -> None:
    nvml = Nvml(nvml_double(unified=unified))
    assert nvml.start()
    processes = ServerProcesses(server_pid=100, server_rss=1, stub_pids={101: "tiny-chat_tensorrt_llm"})
    collector = make(
        config(CHAT_TWO_REPLICAS),
        executor,
        {"http://10.0.0.1:8002/metrics": LOADED, "http://10.0.0.2:8002/metrics": LOADED},
        nvml=nvml,
        read_processes=lambda pid: processes,
    )
    got = scrape(collector)
    labels = {"model": "tiny-chat", "pool": "chat", "replica": "0", "step": "engine", "gpu": "0"}
    assert got[key("tritonstack_model_gpu_memory_bytes", **labels)] == 40 * GIB
    assert got[key("tritonstack_server_gpu_memory_bytes", pool="chat", replica="0", gpu="0")] == 2 * GIB
    assert got[key("tritonstack_exporter_source_up", source="nvml")] == 1.0
    if unified:
        assert got[key("tritonstack_gpu_memory_reporting_supported", gpu="0")] == 0.0
        assert got[key("tritonstack_gpu_memory_used_bytes", gpu="0", source="meminfo")] == 28 * GIB
        assert got[key("tritonstack_gpu_memory_total_bytes", gpu="0", source="meminfo")] == 128 * GIB
        assert key("tritonstack_gpu_memory_used_bytes", gpu="0", source="nvml") not in got
    else:
        assert got[key("tritonstack_gpu_memory_reporting_supported", gpu="0")] == 1.0
        assert got[key("tritonstack_gpu_memory_used_bytes", gpu="0", source="nvml")] == 150 * GIB
        assert key("tritonstack_gpu_memory_used_bytes", gpu="0", source="meminfo") not in got


def test_nvml_absent_is_not_an_error() -> None:
    nvml = Nvml()  # the real pynvml: this machine has no NVIDIA driver
    started = nvml.start()
    try:
        assert started is nvml.available
    finally:
        nvml.stop()


# --- conventions ------------------------------------------------------------------------------------


def test_output_passes_promtool_check_metrics_and_matches_the_catalogue(executor) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    collector = make(
        config(CHAT_TWO_REPLICAS),
        executor,
        {"http://10.0.0.1:8002/metrics": LOADED, "http://10.0.0.2:8002/metrics": "garbage{"},
        nvml=Nvml(nvml_double(unified=True)),
    )
    collector._nvml.start()  # noqa: SLF001 (test double started like the runtime does)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    published = {line.split("{")[0].split()[0] for line in text.decode().splitlines() if not line.startswith("#")}
    assert published <= {spec.name for spec in CATALOGUE}
    assert all(":" not in name for name in published)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(RuntimeSetupError, match=r"pools\.chat.*exactly one of replicas"):
        config("  chat:\n    role: aggregated\n    models: [tiny-chat]\n")
    with pytest.raises(RuntimeSetupError, match="not an exporter config"):
        parse_config("apiVersion: tritonstack/routes-v1\n")
