"""Files read once (compressed, a ZIP member) opened through formats.open_data: every file
they open is closed with them."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path

import pytest

from service.formats import Limits, detect_format, iter_records, open_data, read_header

ROWS = b"external_id,email\nu1,a@example.com\nu2,b@example.com\n"


def open_files() -> set[str]:
    """The files this process holds open (by what each descriptor points to)."""
    folder = Path("/proc/self/fd")
    found = set()
    for fd in os.listdir(folder):
        try:
            found.add(os.readlink(folder / fd))
        except OSError:
            pass  # the descriptor listdir itself used
    return found


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("users.zip", zipped({"export/users.csv": ROWS})),
        ("users.zip", zipped({"users.csv.gz": gzip.compress(ROWS)})),
        ("users.csv.gz", gzip.compress(ROWS)),
    ],
    ids=["zip member", "gzip in a zip", "gzip"],
)
def test_closing_what_open_data_gives_closes_the_file_under_it(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    limits = Limits()
    fmt = detect_format(path, {}, limits)
    header = read_header(path, fmt, limits)
    before = open_files()
    with open_data(path, fmt, limits) as fh:
        assert str(path) in open_files() - before
        assert fh.read().endswith(b"u2,b@example.com\n")
    assert str(path) not in open_files()
    records = list(iter_records(path, fmt, header, limits))
    assert [record.cells for record in records] == [["u1", "a@example.com"], ["u2", "b@example.com"]]
    assert str(path) not in open_files()
