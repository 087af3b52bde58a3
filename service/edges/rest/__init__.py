"""The REST edge: the falcon app (`app`; `gunicorn service.rest:app`), its OpenAPI document,
the status page (`/ui`) and the Prometheus endpoint (`/metrics`). It imports the shared edge
modules (api, wiring) and the layers below, never the gRPC or CLI edge.
"""
