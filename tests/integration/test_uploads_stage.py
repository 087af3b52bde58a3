"""The upload stage (SPEC 19) against a real app DB and a real blob root: what counts as stored
when a request goes wrong part-way. The HTTP side is tests/e2e/test_uploads.py's."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Config
from service.sources import parts
from service.stages import uploads
from service.storage.jobs import migrate
from service.storage.uploads import UploadStore
from tests.conftest import Databases


@pytest.fixture
def setup(databases: Databases, tmp_path: Path) -> Iterator[tuple[Config, UploadStore]]:
    dsn = databases.create("app")
    migrate(dsn)
    (tmp_path / "acme").mkdir()
    config = Config(app_db_dsn=dsn, blob_root=tmp_path, customers={"acme": "dbname=acme"})
    store = UploadStore(dsn, maxconn=1)
    try:
        yield config, store
    finally:
        store.close()


def test_bytes_counted_before_a_request_overflows_stay_stored(
    setup: tuple[Config, UploadStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, store = setup
    monkeypatch.setattr(uploads, "COUNT_EVERY_BYTES", 10)
    monkeypatch.setattr(parts, "PIECE_BYTES", 5)
    data = bytes(range(22))
    upload = uploads.create(config, store, "acme", len(data), "x.bin", {})
    # A body without a length (chunked) that goes past the upload's 22 bytes: counted at 10 and 20 on the way.
    with pytest.raises(uploads.TooLarge):
        uploads.receive(config, store, upload, 0, io.BytesIO(data + b"extra").read, None)
    stored = store.get(upload.id)
    assert stored is not None and (stored.received, stored.finished) == (20, False)
    part = parts.part_path(config.blob_root, "acme", upload.id)
    assert part.read_bytes() == data[:20]  # what was counted is there, not cut away
    finished = uploads.receive(config, store, stored, 20, io.BytesIO(data[20:]).read, None)
    assert finished.finished
    assert (config.blob_root / "acme" / "uploads" / f"{upload.id}-x.bin").read_bytes() == data


def test_a_client_gone_mid_request_keeps_what_arrived(setup: tuple[Config, UploadStore]) -> None:
    config, store = setup
    data = b"0123456789" * 3
    upload = uploads.create(config, store, "acme", len(data), "y.bin", {})
    sent = io.BytesIO(data[:12])

    def read(size: int) -> bytes:
        piece = sent.read(size)
        if not piece:
            raise ConnectionResetError("the client went away")
        return piece

    after = uploads.receive(config, store, upload, 0, read, len(data))
    assert (after.received, after.finished) == (12, False)
    assert parts.part_path(config.blob_root, "acme", upload.id).read_bytes() == data[:12]
