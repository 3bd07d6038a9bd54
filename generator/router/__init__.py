"""The router: an OpenAI-compatible front door over the stack's Triton pools.

Data flow, one module each: ``config`` (routes.yaml) → ``app`` (ASGI: parse with ``protocol``,
check with ``auth`` and ``tokens``) → ``dispatch`` (``admission`` + ``policies`` pick a replica kept
current by ``replicas``; retries before the first byte) or ``disagg`` (prefill → decode) →
``upstream`` (Triton HTTP or gRPC) → SSE/JSON back, observed by ``metrics``. On the default
engine-direct path (``engine``) the router sends the engine model token ids and turns the ids it
gets back into text itself; the BLS and ensemble paths send text. ``server`` serves it
(``tritonstack router``, ``generator/commands/router.py``). Its settings are the spec's ``router:``
section, ``generator/spec/router.py``.
"""
