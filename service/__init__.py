"""The HTTP planning service: the runtime dispatcher behind FastAPI and uvicorn (extra ``service``).

``python -m service --model resnet18`` serves ``POST /v1/plan``, ``POST /v1/plans``,
``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` and the OpenAPI pages at ``/docs``.
:mod:`service.client` is a small typed client for Python users.
"""
