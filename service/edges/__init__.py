"""The edges: the front doors users call (REST in `rest/`, gRPC in `grpc/`, importctl in `cli/`).

An edge parses a request, checks who is calling, calls a stage through `api.Api` (the calls
every edge makes, with access checks) and turns the answer or the error into its protocol's
(HTTP status, gRPC code, exit code): errors become answers here and only here. `tokens`
reads the API token file, `wiring` builds an edge's Api from the configuration. The three
front doors never import each other. Edges may import every layer below: actors (the CLI
runs workers in-process), stages, formats, sources, storage, schema and the leaves.
"""
