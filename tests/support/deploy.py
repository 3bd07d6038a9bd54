"""Specs and a render helper shared by the deployment tests (tests/deploy/).

The specs use absolute node paths under /artifacts so the output does not depend on where the
tests run (golden files stay stable).
"""

from __future__ import annotations

from pathlib import Path

from generator.render.deploy import render_deploy
from generator.render.monitoring import render_monitoring
from generator.render.options import RenderOptions
from generator.render.routes import render_routes
from generator.spec import Stack, parse_spec

__all__ = ["SPECS", "OPTIONS", "stack_of", "render_all", "deploy_files"]

OPTIONS = RenderOptions(spec_dir=Path("/specs"), out_dir=Path("/specs/build"))

TWO_POOL = """
apiVersion: tritonstack/v1
name: two-pool
target: {triton: "26.07", gpu: b200, gpus_per_node: 8}
models:
  - name: llama-8b
    engine_dir: /artifacts/engines/llama-8b/fp8-tp1
    tokenizer_dir: /artifacts/hf/llama-8b
  - name: qwen-32b
    engine_dir: /artifacts/engines/qwen-32b/fp8-tp2
    tokenizer_dir: /artifacts/hf/qwen-32b
    tensor_parallel: 2
pools:
  - {name: chat-small, models: [llama-8b], replicas: 3}
  - {name: chat-large, models: [qwen-32b], replicas: 2}
router:
  api_keys_env: ROUTER_API_KEYS
deploy:
  namespace: llm
  gpu_kinds:
    - {name: b200, node_product: NVIDIA-B200}
    - {name: h100, node_product: NVIDIA-H100-80GB-HBM3, node_selector: {pool.example.com/tier: serving}}
  router:
    replicas: 2
    autoscaling: {min_replicas: 2, max_replicas: 6}
  gitops: {repo_url: "https://git.example.com/serving/stacks.git", path: stacks/two-pool}
  autoscaling:
    defaults: {tokens_per_second: 2500}
    pools:
      chat-large: {min_replicas: 0, max_replicas: 4, kv_cache_usage: 0.8, activation_requests_per_second: 0.1}
  monitoring:
    dashboards: [configmap, grafana-operator]
  gateway: {gateway: inference-gateway, gateway_namespace: gateway-system}
"""

DISAGG = """
apiVersion: tritonstack/v1
name: disagg
target: {triton: "25.12", gpu: gb200, gpus_per_node: 4}
models:
  - name: llama-70b
    # Separately scalable prefill/decode pools: the LLM-API path (the 25.12 engine backend moves KV
    # only inside one MPI world, see spec.stack._kv_transfer_problems).
    llm_api: true
    checkpoint_dir: /artifacts/hf/llama-70b
    tokenizer_dir: /artifacts/hf/llama-70b
    tensor_parallel: 2
  - name: tiny-chat
    reference_engine: {}
    tokenizer_dir: /artifacts/hf/tiny-chat
pools:
  - {name: prefill, role: prefill, models: [llama-70b], replicas: 2}
  - {name: decode, role: decode, models: [llama-70b]}
  - {name: cpu-chat, models: [tiny-chat]}
router:
  api_keys_file: /etc/tritonstack-keys/keys.txt
deploy:
  pool_workload: StatefulSet
  storage:
    kind: sync
    sync: {source: "s3://models-bucket/stacks/disagg", credentials_secret: s3-credentials}
  images: {registry: registry.local:5000, pull_secret: regcred}
  disaggregated_set: true
  autoscaling:
    pools:
      prefill: {min_replicas: 1, max_replicas: 6, tokens_per_second: 40000, kv_cache_usage: null}
  gateway: {gateway: inference-gateway, objectives: [{name: realtime, priority: 5}]}
"""

MULTI_NODE = """
apiVersion: tritonstack/v1
name: big
target: {triton: "26.07", gpu: b200, gpus_per_node: 8}
models:
  - name: giant
    engine_dir: /artifacts/engines/giant/fp8-tp8-pp2
    tokenizer_dir: /artifacts/hf/giant
    tensor_parallel: 8
    pipeline_parallel: 2
pools:
  - {name: giant, models: [giant], replicas: 1}
deploy:
  storage: {kind: host_path}
  autoscaling: {defaults: {max_replicas: 2}}
  monitoring: {prometheus_rules: true, dashboards: [grafana-operator]}
  gateway: {gateway: inference-gateway}
"""

SPECS = {"two-pool": TWO_POOL, "disagg": DISAGG, "multi-node": MULTI_NODE}


def stack_of(name: str) -> Stack:
    return parse_spec(SPECS[name], f"{name}.yaml")


def render_all(stack: Stack) -> dict[str, bytes]:
    """The routes and monitoring stages plus deploy, as the full render produces them."""
    siblings = {**render_routes(stack, OPTIONS), **render_monitoring(stack)}
    return {**siblings, **render_deploy(stack, siblings, OPTIONS)}


def deploy_files(stack: Stack) -> dict[str, bytes]:
    return {path: content for path, content in render_all(stack).items() if path.startswith("deploy/")}
