"""Entry point: `python -m service.grpc_server` (SPEC 9) serves the gRPC edge, service.edges.grpc.server."""

from __future__ import annotations

import sys

from service.edges.grpc.server import main

if __name__ == "__main__":
    sys.exit(main())
