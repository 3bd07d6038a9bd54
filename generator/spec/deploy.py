"""The spec's ``deploy:`` section: how the stack runs on Kubernetes and under compose.

Every default lives on its field. Values that are secrets (API keys, the header value that unlocks
Triton's restricted APIs) never appear here: the spec names the Kubernetes Secret (or, for compose,
the environment variable / file) that holds them, so nothing secret is ever rendered into ``build/``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from generator.spec.base import TRITON_PORTS, Closed, PoolName, Port, PositiveInt

__all__ = [
    "Autoscaling",
    "ComponentResources",
    "DeploySettings",
    "GatewayRouting",
    "GitOps",
    "GpuKind",
    "ImageSettings",
    "InferenceObjective",
    "MonitoringObjects",
    "PoolAutoscaling",
    "PoolScaling",
    "PrometheusAccess",
    "Resources",
    "RouterDeploy",
    "StorageSettings",
    "SyncSettings",
    "TritonPorts",
]

# Kubernetes quantities (CPU "500m", "8"; memory "16Gi", "512Mi"): checked here so a typo is a spec
# error with a line number, not an API-server rejection at apply time.
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi)?$")
# Kubernetes object names (DNS-1123 subdomain, kept short enough for suffixes).
OBJECT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,51}[a-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def _quantity(value: str) -> str:
    if not QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '500m', '8', '16Gi')")
    return value


def _object_name(value: str) -> str:
    if not OBJECT_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes name: 1-53 lowercase letters, digits and '-'")
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, label in value.items():
        if not LABEL_KEY.match(key):
            raise ValueError(f"{key!r} is not a valid Kubernetes label key")
        if not LABEL_VALUE.match(label):
            raise ValueError(f"{label!r} (label {key}) is not a valid Kubernetes label value")
    return value


def _env_name(value: str) -> str:
    if not ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not an environment variable name (upper case, digits, '_')")
    return value


def _image(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"{value!r} is not a container image reference")
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path inside the container")
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]
ObjectName = Annotated[str, AfterValidator(_object_name)]
Labels = Annotated[dict[str, str], AfterValidator(_labels)]
EnvName = Annotated[str, AfterValidator(_env_name)]
Image = Annotated[str, AfterValidator(_image)]
AbsolutePath = Annotated[str, AfterValidator(_absolute)]
DashboardDelivery = Literal["configmap", "grafana-operator"]


class ImageSettings(Closed):
    triton: Image | None = Field(
        default=None,
        description="tritonserver image; unset uses nvcr.io/nvidia/tritonserver:<target.triton>-trtllm-python-py3",
    )
    tritonstack: Image = Field(
        default="tritonstack:0.1.0",
        description="Image with the tritonstack package installed; runs the router and the exporter",
    )
    registry: str | None = Field(
        default=None,
        description="Mirror registry: replaces the registry part of every image (e.g. 'registry.local:5000')",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    pull_secret: ObjectName | None = Field(default=None, description="Name of an existing image pull Secret")


class SyncSettings(Closed):
    """Fill node-local volumes from object storage in an init container before Triton starts.

    TensorRT-LLM engines cannot be served from an ``s3://`` model repository (the engine and tokenizer
    paths in config.pbtxt must be local), so the files are copied first.
    See https://github.com/triton-inference-server/tensorrtllm_backend/issues/727.
    """

    source: Annotated[str, Field(pattern=r"^(s3|gs)://[^\s]+$")] = Field(
        description="Bucket prefix holding model_repos/<pool>/ (as rendered) and artifacts/ (engines, tokenizers)"
    )
    image: Image = "amazon/aws-cli:2.22.35"
    credentials_secret: ObjectName | None = Field(
        default=None, description="Secret whose keys become the sync container's environment (e.g. AWS_*)"
    )


class StorageSettings(Closed):
    """Where model repositories and engines/tokenizers come from inside the pods.

    ``pvc`` mounts claims (the repository claim holds ``model_repos/`` as rendered, one sub-path per
    pool; the artifacts claim holds engines and tokenizers, one sub-path per GPU kind because engines
    are GPU- and TP-specific); ``host_path`` mounts node directories instead; ``sync`` copies from
    object storage into emptyDir volumes.
    """

    kind: Literal["pvc", "host_path", "sync"] = "pvc"
    models_claim: ObjectName = "tritonstack-model-repos"
    artifacts_claim: ObjectName = "tritonstack-artifacts"
    create_claims: bool = Field(default=True, description="Render the PersistentVolumeClaims (else they must exist)")
    models_size: Quantity = "1Gi"
    artifacts_size: Quantity = "500Gi"
    storage_class: ObjectName | None = None
    access_mode: Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"] = Field(
        default="ReadWriteMany", description="Replicas on several nodes need a ReadWriteMany/ReadOnlyMany class"
    )
    models_host_path: AbsolutePath = "/srv/tritonstack/model_repos"
    artifacts_host_path: AbsolutePath = "/srv/tritonstack/artifacts"
    artifacts_mount_path: AbsolutePath = Field(
        default="/artifacts",
        description="Where engines and tokenizers appear in the pods; engine_dir/tokenizer_dir must lie under it",
    )
    sync: SyncSettings | None = None

    @model_validator(mode="after")
    def _sync_needs_source(self) -> StorageSettings:
        if (self.kind == "sync") != (self.sync is not None):
            raise ValueError("storage.kind: sync and storage.sync: {source: ...} go together; set both or neither")
        mount = self.artifacts_mount_path.rstrip("/")
        if mount == "" or mount == "/models" or mount.startswith("/models/"):
            raise ValueError("artifacts_mount_path must not be /, /models or under it (the model repository mount)")
        return self


class GpuKind(Closed):
    """One kustomize overlay: the GPU kind its engines were built for."""

    name: PoolName = Field(description="Overlay directory name and artifacts sub-path, e.g. 'b200'")
    node_product: str | None = Field(
        default=None,
        description="Value of the nvidia.com/gpu.product node label (GPU feature discovery), e.g. 'NVIDIA-B200'",
    )
    node_selector: Labels = Field(default_factory=dict, description="Extra node labels GPU pods must match")


class ComponentResources(Closed):
    cpu: Quantity
    memory: Quantity
    cpu_limit: Quantity | None = Field(default=None, description="Unset: no CPU limit (avoids throttling)")
    memory_limit: Quantity | None = Field(default=None, description="Unset: same as memory")


class Resources(Closed):
    triton: ComponentResources = ComponentResources(cpu="8", memory="64Gi")
    triton_shm: Quantity = Field(default="16Gi", description="/dev/shm size; the python backend moves tensors through it")
    router: ComponentResources = ComponentResources(cpu="1", memory="1Gi", cpu_limit="2")
    exporter: ComponentResources = ComponentResources(cpu="250m", memory="256Mi", cpu_limit="500m")


class Autoscaling(Closed):
    min_replicas: PositiveInt = 2
    max_replicas: PositiveInt = 8
    cpu_utilization: Annotated[int, Field(ge=1, le=100)] = 70

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        return self


class RouterDeploy(Closed):
    replicas: PositiveInt = 2
    autoscaling: Autoscaling | None = Field(default=None, description="Render a HorizontalPodAutoscaler")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"


class TritonPorts(Closed):
    http: Port = TRITON_PORTS.http
    grpc: Port = TRITON_PORTS.grpc
    metrics: Port = TRITON_PORTS.metrics

    @model_validator(mode="after")
    def _distinct(self) -> TritonPorts:
        if len({self.http, self.grpc, self.metrics}) != 3:
            raise ValueError("http, grpc and metrics ports must differ")
        return self


class PrometheusAccess(Closed):
    """Who scrapes: the only pods besides the router and exporter allowed to reach Triton's ports."""

    namespace: PoolName = "monitoring"
    pod_labels: Labels = Field(default_factory=lambda: {"app.kubernetes.io/name": "prometheus"})
    service_monitor_labels: Labels = Field(
        default_factory=lambda: {"release": "prometheus"},
        description="Labels the Prometheus Operator's serviceMonitorSelector matches",
    )
    scrape_interval: Annotated[str, Field(pattern=r"^[0-9]+(ms|s|m)$")] = "15s"


class GitOps(Closed):
    repo_url: str | None = Field(
        default=None, description="Git repository holding build/; renders Argo CD Applications and Flux Kustomizations"
    )
    revision: str = "main"
    path: str = Field(default="build", description="Folder of the rendered output inside the Git repository")
    argocd_namespace: PoolName = "argocd"
    project: str = "default"
    flux_namespace: PoolName = "flux-system"
    flux_source: ObjectName = Field(
        default="tritonstack", description="Name of the Flux GitRepository (in flux_namespace) that fetches repo_url"
    )
    flux_interval: Annotated[str, Field(pattern=r"^[0-9]+(s|m|h)$")] = "10m"


class PoolScaling(Closed):
    """Bounds and per-replica targets of one pool's KEDA ScaledObject.

    Each target is the value one replica should carry; KEDA's ``AverageValue`` divides the pool's
    total by the replica count (the KV ratio is averaged and compared as a ``Value``). The HPA
    behind the ScaledObject scales to the largest replica count any target asks for. A target set
    to null is not rendered.
    """

    min_replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Unset: the pool's replicas (what the spec sized for). 0 scales to zero when idle",
    )
    max_replicas: PositiveInt | None = Field(
        default=None,
        description="Unset: twice min_replicas (at least 1): at most doubles the pool's GPUs without a decision",
    )
    # Engine waiting + Triton-queued requests per replica. A replica whose batch is full queues new
    # requests; a few waiting per replica means each waits about one prefill, while a longer queue
    # adds its whole length to time to first token. 4 reacts before the TritonstackQueueGrowing
    # alert (which fires on any queue that keeps growing) while ignoring a momentary burst.
    waiting_requests: Annotated[float, Field(gt=0)] | None = 4.0
    # Average KV-cache usage. Below TritonstackKvCacheNearlyFull (0.95): the engine pauses or evicts
    # requests when blocks run out, so scaling has to start while there is headroom.
    kv_cache_usage: Annotated[float, Field(gt=0, le=1)] | None = 0.85
    # Generated tokens/s per replica (prompt tokens/s for a prefill pool). No default: a replica's
    # capacity depends on model, GPU, batch and sequence lengths; take ~70-80% of the throughput
    # `tritonstack bench` measured (or the planner estimated) for one replica at the target latency.
    tokens_per_second: Annotated[float, Field(gt=0)] | None = None
    # With min_replicas 0: the router's request rate for the pool (503s included, as it answers
    # when no replica runs) above this wakes the pool; 0 means any request.
    activation_requests_per_second: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> PoolScaling:
        if self.min_replicas is not None and self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        if self.waiting_requests is None and self.kv_cache_usage is None and self.tokens_per_second is None:
            raise ValueError("set at least one of waiting_requests, kv_cache_usage, tokens_per_second")
        return self


class PoolAutoscaling(Closed):
    """KEDA ScaledObjects on the exporter's series, one per pool (the router's HPA stays separate).

    Needs KEDA (https://keda.sh) and a Prometheus that scrapes the exporter through the rendered
    ServiceMonitor (its series then carry the ``namespace`` label the queries select on).
    """

    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        pattern=r"^https?://[^\s]+$",
        description="Prometheus KEDA queries; prometheus-operated is the Service the Prometheus Operator creates",
    )
    # KEDA polls every 30 s by default; 15 s matches the default scrape interval, so no scrape is missed.
    polling_interval_s: PositiveInt = 15
    # Only used when scaling to zero: how long every trigger must be inactive first (KEDA's default).
    cooldown_period_s: PositiveInt = 300
    # An engine takes minutes to load; scaling down on a short lull would pay that again right after.
    scale_down_stabilization_s: Annotated[int, Field(ge=0)] = 600
    defaults: PoolScaling = PoolScaling()
    pools: dict[PoolName, PoolScaling] = Field(
        default_factory=dict, description="Per pool, replaces defaults entirely for that pool"
    )


class MonitoringObjects(Closed):
    """Monitoring objects in the cluster, beside the ServiceMonitors."""

    prometheus_rules: bool = Field(default=True, description="The recording and alert rules as a PrometheusRule")
    rule_labels: Labels = Field(
        default_factory=lambda: {"release": "prometheus"},
        description="Labels the Prometheus Operator's ruleSelector matches",
    )
    dashboards: list[DashboardDelivery] = Field(
        default_factory=lambda: list[DashboardDelivery](["configmap"]),
        description="configmap: for the Grafana sidecar (label grafana_dashboard); "
        "grafana-operator: a GrafanaDashboard (grafana.integreatly.org/v1beta1)",
    )
    dashboard_folder: str = "tritonstack"
    grafana_instance_labels: Labels = Field(
        default_factory=lambda: {"dashboards": "grafana"},
        description="Labels of the Grafana instances a GrafanaDashboard goes to (its instanceSelector)",
    )


class InferenceObjective(Closed):
    name: ObjectName
    priority: int = Field(description="Higher is served first when the pool is saturated")


class GatewayRouting(Closed):
    """Gateway API Inference Extension routing (opt-in): an InferencePool and endpoint picker per
    serving pool, an HTTPRoute from the Gateway, and InferenceObjectives.

    Triton does not speak the OpenAI API, so each pool pod gets the router as a sidecar that serves
    it on ``stack.router.port`` for that pod's Triton; the InferencePool targets the sidecar and the
    picker reads Triton's nv_trt_llm_* metrics on the metrics port (model-server type
    ``triton-tensorrt-llm``). Needs a Gateway implementation with inference extension support, its
    CRDs, and Body-Based Routing, which copies the body's ``model`` into X-Gateway-Model-Name.
    """

    gateway: ObjectName = Field(description="Name of the Gateway the HTTPRoute attaches to")
    gateway_namespace: PoolName | None = Field(default=None, description="Unset: the stack's namespace")
    # v0.10.0 is the first release whose metrics-data-source takes a port (llm-d/llm-d-router#2290):
    # Triton serves metrics on their own port, apart from the OpenAI port the pool targets.
    epp_image: Image = "ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.10.0"
    # FailOpen: when the picker is down, the gateway still sends requests to some pod of the pool.
    failure_mode: Literal["FailOpen", "FailClose"] = "FailOpen"
    request_timeout: Annotated[str, Field(pattern=r"^[0-9]+(ms|s|m|h)$")] = "600s"
    objectives: list[InferenceObjective] = Field(
        default_factory=lambda: [InferenceObjective(name="interactive", priority=10), InferenceObjective(name="batch", priority=0)],
        description="Rendered per pool as <objective>-<pool>; a request names one in x-llm-d-inference-objective",
    )


class DeploySettings(Closed):
    namespace: PoolName = "tritonstack"
    images: ImageSettings = ImageSettings()
    storage: StorageSettings = StorageSettings()
    gpu_kinds: list[GpuKind] = Field(
        default_factory=list,
        description="One kustomize overlay per GPU kind; empty renders one overlay named after target.gpu",
    )
    pool_workload: Literal["Deployment", "StatefulSet"] = Field(
        default="Deployment", description="StatefulSet gives replicas stable names (e.g. for cache-aware routing)"
    )
    triton_ports: TritonPorts = TritonPorts()
    resources: Resources = Resources()
    router: RouterDeploy = RouterDeploy()
    startup_timeout_s: PositiveInt = Field(
        default=1800, description="How long a Triton pod may take to load its engines before it is restarted"
    )
    api_keys_secret: ObjectName = Field(
        default="tritonstack-api-keys",
        description="Secret (key 'api-keys') given to the router as router.api_keys_env and/or router.api_keys_file",
    )
    restricted_api_header: str = Field(
        default="triton-admin-key",
        pattern=HEADER_NAME.pattern,
        description="Header that unlocks Triton's model-repository, config, logging, trace and statistics APIs",
    )
    restricted_api_secret: ObjectName = Field(
        default="tritonstack-triton-admin", description="Secret (key 'value') holding that header's value"
    )
    compose_env_prefix: EnvName = Field(
        default="TRITONSTACK", description="Compose reads <prefix>_TRITON_ADMIN_KEY from the environment or .env"
    )
    prometheus: PrometheusAccess = PrometheusAccess()
    gitops: GitOps = GitOps()
    grafana_image: Image = "grafana/grafana:11.4.0"
    prometheus_image: Image = "prom/prometheus:v3.1.0"
    labels: Labels = Field(default_factory=dict, description="Extra labels on every object")
    autoscaling: PoolAutoscaling | None = Field(default=None, description="KEDA ScaledObjects per pool")
    monitoring: MonitoringObjects = MonitoringObjects()
    gateway: GatewayRouting | None = Field(default=None, description="Gateway API inference routing")
    disaggregated_set: bool = Field(
        default=False,
        description="Render each prefill/decode pair as one LWS DisaggregatedSet (LWS >= 0.9) with per-role scaling",
    )

    @model_validator(mode="after")
    def _unique_gpu_kinds(self) -> DeploySettings:
        names = [kind.name for kind in self.gpu_kinds]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"gpu_kinds: duplicate names {duplicates}")
        return self

