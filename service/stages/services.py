"""What every stage gets, and the stages' names.

`Services` is built once per worker process (actors/) and passed to each stage; the names
are the actors' names, stable because queued messages store them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from service import formats
from service.config import Config
from service.schema.products import ProductRegistry
from service.storage.db import customer_dsn
from service.storage.feeds import FeedStore
from service.storage.jobs import JobStore
from service.storage.store import CustomerStore
from service.storage.uploads import UploadStore

FETCH, PARSE, VALIDATE, INSERT = "import_fetch", "import_parse", "import_validate", "import_insert"
UNDO = "import_undo"  # a big undo, finished by a worker (stages.control)
DISCARD = "import_discard"  # deletes what a cancelled job left
REPLAY = "import_replay"  # the first stage of a replay job, instead of fetch and parse
# A chunk's time limit (its actor's) bounds how long after a failure it may still commit
# rows; the final cleanup of a failed job waits that long.
CHUNK_TIME_LIMIT_SECONDS = 300
CLEANUP_AFTER_SECONDS = CHUNK_TIME_LIMIT_SECONDS + 60
# Attempts that never ended (the worker died) before a chunk or stage fails its job.
MAX_CRASHES = 3
# A chunk also ends at this many bytes, so one chunk's COPY buffer stays small whatever the rows' size.
CHUNK_BYTES = 32 * 1024 * 1024
CHUNKS_PER_TRANSACTION = 8


@dataclass
class Services:
    """What the stages need, built once per process and passed in."""

    config: Config
    jobs: JobStore
    products: ProductRegistry
    app_dsn: str

    def customer(self, customer_id: str) -> CustomerStore:
        """The store of one customer's database."""
        return CustomerStore(customer_dsn(self.config, customer_id, self.app_dsn))

    @cached_property
    def uploads(self) -> UploadStore:
        """The app DB's uploads (SPEC 19): the sweep deletes the expired and the old."""
        return UploadStore(self.app_dsn, maxconn=1)

    @cached_property
    def feeds(self) -> FeedStore:
        """The app DB's feeds (SPEC 20): the sweep runs those due."""
        return FeedStore(self.app_dsn, maxconn=2)

    @cached_property
    def limits(self) -> formats.Limits:
        """File limits from the configuration."""
        c = self.config
        return formats.Limits(
            max_file_bytes=c.max_file_bytes,
            max_field_bytes=c.max_field_bytes,
            max_record_bytes=c.max_record_bytes,
            max_xlsx_bytes=c.max_xlsx_bytes,
            max_columns=c.max_columns,
            max_text_bytes=c.max_text_bytes,
            max_compression_ratio=c.max_compression_ratio,
        )
