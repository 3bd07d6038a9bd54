"""``tritonstack verify``: check a live stack against what its spec renders to.

Data flow: ``checks`` renders the spec (``generator.pipeline``) and, for every pool replica given,
compares each served model's ``/v2/models/<m>/config`` with the render, then sends ``conformance``
requests (shaped like NVIDIA's TensorRT-LLM clients) to every model kind, ``router_checks`` sends
OpenAI requests through the router, and the metric families the exporter and dashboards read are
looked up on Triton's, the exporter's and the router's ``/metrics``. Each check gives a
``report.CheckResult``; ``report`` prints them as a table or JSON. The command is
``generator/commands/verify.py``.
"""
