"""The stack spec: a closed, typed description of a whole serving stack, and the facts derived from it.

Every later stage reads its settings from here: ``stack.py`` holds the stack model, its loader and the
cross-field checks; ``router.py``, ``exporter.py`` and ``deploy.py`` the settings of the router, the
exporter and the deployment; ``model_facts.py`` the architecture numbers a spec may state;
``releases.py`` the Triton release catalog; ``base.py`` the shared field types and tritonserver's
default ports; ``source.py`` the YAML reader that keeps line numbers for error messages. The package
imports nothing else of the project but ``generator.errors`` (``tests/spec/test_spec.py`` checks), so
router, exporter, plan and render all import their settings from the spec, never the reverse.
"""

from generator.spec.base import TRITON_PORTS
from generator.spec.deploy import DeploySettings
from generator.spec.exporter import ExporterSettings
from generator.spec.model_facts import ModelFacts, QuantFacts
from generator.spec.releases import RELEASES, TritonRelease
from generator.spec.router import RouterSettings
from generator.spec.stack import (
    API_VERSION,
    CacheTransceiver,
    Instances,
    KvCache,
    Model,
    Pool,
    ReferenceEngine,
    Stack,
    Target,
    json_schema,
    load_spec,
    parse_spec,
    spec_from_data,
    uses_llm_api,
)

__all__ = [
    "API_VERSION",
    "Stack",
    "Model",
    "Pool",
    "ReferenceEngine",
    "KvCache",
    "CacheTransceiver",
    "Instances",
    "Target",
    "RouterSettings",
    "ExporterSettings",
    "DeploySettings",
    "ModelFacts",
    "QuantFacts",
    "TritonRelease",
    "RELEASES",
    "TRITON_PORTS",
    "uses_llm_api",
    "load_spec",
    "parse_spec",
    "spec_from_data",
    "json_schema",
]
