"""Every family in the exporter's catalogue (generator/exporter/catalogue.py) is emitted.

The collector runs against fixture inputs only: the /metrics text captured from a real tritonserver
(tests/fixtures/metrics/triton_stand_in_loaded.txt) and the hand-written C++-backend page
(triton_trtllm_cpp_gpu.txt), a replica whose page does not parse, a process table with a server PID and stub PIDs, a stand-in NVML module
(tests/exporter/test_collector.py's shape), /proc/meminfo and memory-pressure values. A family the
catalogue lists but no scrape emits would be a dashboard panel or alert that can never fire.

No family needs live data: the GPU families, which a CPU machine cannot produce from a driver, come
from the stand-in NVML (discrete: source=nvml; unified memory: source=meminfo, reporting_supported 0),
and target_scrape_errors_total from the unparsable page (it is published only after a failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from generator.exporter.catalogue import CATALOGUE
from generator.exporter.collector import TritonstackCollector
from generator.exporter.config import parse_config
from generator.exporter.gpu_memory import MemInfo, Nvml
from generator.exporter.processes import ServerProcesses
from tests.support import paths
from tests.support.nvml import GIB, nvml_double

FIXTURES = paths.FIXTURES / "metrics"

CONFIG = """apiVersion: tritonstack/exporter-v1
stack: t
exporter: {upstream_timeout_s: 2.0}
pools:
  chat:
    role: aggregated
    models: [tiny-chat]
    replicas:
      - {host: 10.0.0.1, metrics: 8002, pid: 100}
      - {host: 10.0.0.3, metrics: 8002}
  big:
    role: aggregated
    models: [llama-3.1-8b]
    replicas:
      - {host: 10.0.0.2, metrics: 8002, pid: 200}
"""

PAGES = {
    "http://10.0.0.1:8002/metrics": (FIXTURES / "triton_stand_in_loaded.txt").read_text(),
    "http://10.0.0.2:8002/metrics": (FIXTURES / "triton_trtllm_cpp_gpu.txt").read_text(),
    # A replica whose page does not parse: target_scrape_errors_total is published only once a
    # scrape has failed, so a healthy fixture set alone would never show it.
    "http://10.0.0.3:8002/metrics": "<html>oops</html>",
}

PROCESSES = {
    100: ServerProcesses(
        server_pid=100,
        server_rss=300 * (1 << 20),
        stub_rss={"tiny-chat_tensorrt_llm": 1 << 30, "tiny-chat_preprocessing": 70 << 20},
        stub_pids={101: "tiny-chat_tensorrt_llm"},
    ),
    200: ServerProcesses(server_pid=200, server_rss=400 * (1 << 20)),
}


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def emitted(executor: ThreadPoolExecutor, *, unified: bool) -> dict[str, int]:
    """Family name -> number of samples in one scrape's exposition text."""
    nvml = Nvml(nvml_double(unified=unified))
    assert nvml.start()
    collector = TritonstackCollector(
        parse_config(CONFIG),
        fetch=lambda url, timeout: PAGES[url],
        resolve=lambda name: [],
        executor=executor,
        nvml=nvml,
        read_processes=lambda pid: PROCESSES[pid],
        meminfo=lambda: MemInfo(total_bytes=128 * GIB, available_bytes=100 * GIB),
        memory_pressure=lambda: 1.5,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        counts[name] = counts.get(name, 0) + len(family.samples)
    return counts


@pytest.mark.parametrize("unified", [False, True], ids=["discrete", "unified-gb10"])
def test_every_catalogue_family_is_emitted(executor: ThreadPoolExecutor, unified: bool) -> None:
    counts = emitted(executor, unified=unified)
    missing = [spec.name for spec in CATALOGUE if not counts.get(spec.name)]
    assert not missing, f"catalogue families with no sample: {missing}"
    assert set(counts) <= {spec.name for spec in CATALOGUE}, "a family the catalogue does not list"
