"""The exporter: Triton metrics and process memory → Prometheus, collected at scrape time.

Data flow: ``config`` (exporter.yaml) → ``collector`` (fetches targets in parallel, each through
``fetch`` within its own deadline and size cap; ``triton_metrics`` parses them, ``processes`` and
``gpu_memory`` read memory) → ``server`` (WSGI /metrics with the
scrape-timeout budget) → ``generator.commands.exporter`` (``tritonstack exporter``). ``catalogue`` lists every series.
Its settings are the spec's ``exporter:`` section, ``generator/spec/exporter.py``.
"""
