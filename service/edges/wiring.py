"""Build what an edge (REST, gRPC, CLI) needs from the configuration, once, at start."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.config import Config, load_config
from service.edges.api import Api
from service.schema.products import ProductRegistry
from service.stages.messages import dispatch
from service.storage.db import app_dsn
from service.storage.jobs import JobStore, migrate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Edge:
    """An edge's configuration, app-DB DSN and Api."""

    config: Config
    dsn: str
    api: Api


def build_edge(config: Config | None = None, maxconn: int = 8) -> Edge:
    """Load config (unless given), find the app DB, migrate it, and build the Api.

    Raises ConfigError for a bad configuration; the caller prints it as one line.
    """
    config = config or load_config()
    if config.auth == "off":
        log.warning("auth is off: every caller of this server acts as the operator, for every customer")
    elif not config.tokens:
        log.warning("no API tokens are configured (api_tokens_path): every call is refused with 401")
    dsn = app_dsn(config)
    migrate(dsn)
    jobs = JobStore(dsn, dispatch=dispatch, maxconn=maxconn)
    return Edge(config, dsn, Api(config, jobs, ProductRegistry.load(config.schemas_dir)))
