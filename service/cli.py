"""Entry point: `importctl` and `python -m service.cli` (SPEC 9) run the CLI edge, service.edges.cli.main."""

from __future__ import annotations

import sys

from service.edges.cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
