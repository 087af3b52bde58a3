"""ZIP archives: picking the data file, refusing what cannot be read, and bombs stopped by the limits."""

from __future__ import annotations

import io
import random
import shutil
import struct
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import openpyxl
import pytest

from service.errors import FileRejected, LimitExceeded
from service.formats import archive
from service.formats.archive import MemberReader, choose, data_members, is_workbook, open_member
from service.formats.limits import Limits

DEFAULTS = Limits()
CSV = b"id,name\n" + b"".join(b"%d,user %d\n" % (i, i) for i in range(2000))


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zeros_zip(size: int, name: str = "bomb.csv") -> bytes:
    """A member of size zero bytes, deflated at level 9 (about 1,000 to 1), written in pieces."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open(name, "w") as member:
        piece = bytes(1 << 20)
        for _ in range(size >> 20):
            member.write(piece)
    return buf.getvalue()


def central_entries(raw: bytes) -> list[int]:
    """Where each central directory entry starts (an archive without zip64 or comment)."""
    count, _, start = struct.unpack_from("<HLL", raw, len(raw) - 12)
    entries, at = [], start
    for _ in range(count):
        entries.append(at)
        name, extra, comment = struct.unpack_from("<3H", raw, at + 28)
        at += 46 + name + extra + comment
    return entries


def edit(raw: bytes, *, member: int = 0, fmt: str, central: int, local: int, value: int) -> bytes:
    """Set one field of a member in both its central entry and its local header."""
    data = bytearray(raw)
    entry = central_entries(raw)[member]
    (header,) = struct.unpack_from("<L", data, entry + 42)
    struct.pack_into(fmt, data, entry + central, value)
    struct.pack_into(fmt, data, header + local, value)
    return bytes(data)


def set_flags(raw: bytes, flags: int) -> bytes:
    return edit(raw, fmt="<H", central=8, local=6, value=flags)


def set_method(raw: bytes, method: int) -> bytes:
    return edit(raw, fmt="<H", central=10, local=8, value=method)


def set_file_size(raw: bytes, size: int) -> bytes:
    return edit(raw, fmt="<L", central=24, local=22, value=size)


def as_zip64(raw: bytes, entries: int | None = None) -> bytes:
    """The archive with zip64 end records (the classic end record saying "see zip64"), declaring
    entries when given."""
    count, dir_size, dir_offset = struct.unpack_from("<HLL", raw, len(raw) - 12)
    body = raw[: len(raw) - 22]
    record_at = len(body)
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries or count, entries or count, dir_size, dir_offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + record + locator + end


def read_all(reader: io.BufferedIOBase | MemberReader, piece: int = 64 * 1024) -> bytes:
    parts = []
    while data := reader.read(piece):
        parts.append(data)
    return b"".join(parts)


def import_member(raw: bytes, member: str | None = None, limits: Limits = DEFAULTS) -> bytes:
    fh = io.BytesIO(raw)
    with open_member(fh, choose(fh, member), limits) as reader:
        return read_all(reader)


# --- choosing the member ---------------------------------------------------------------------


def test_an_archive_with_one_data_file_gives_that_file_decompressed() -> None:
    raw = make_zip({"users.csv": CSV})
    assert choose(io.BytesIO(raw), None).filename == "users.csv"
    assert import_member(raw) == CSV
    assert import_member(make_zip({"users.csv": CSV}, zipfile.ZIP_STORED)) == CSV


def test_reading_a_member_leaves_the_archive_file_open() -> None:
    fh = io.BytesIO(make_zip({"users.csv": CSV}))
    reader = open_member(fh, choose(fh, None), DEFAULTS)
    assert reader.readable() and not reader.seekable()
    assert reader.read(8) == b"id,name\n"
    reader.close()
    assert not fh.closed and reader.closed


def test_directories_macosx_and_dot_files_are_not_data_files() -> None:
    raw = make_zip(
        {
            "export/": b"",
            "export/users.csv": CSV,
            "__MACOSX/export/._users.csv": b"resource fork",
            "__MACOSX/export/users.csv": b"a copy macOS keeps",
            "__MACOSX/": b"",
            ".DS_Store": b"finder",
            "export/.hidden.csv": b"a,b\n",
            ".git/config": b"[core]",
            "export/._users.csv": b"apple double",
        }
    )
    assert [info.filename for info in data_members(io.BytesIO(raw))] == ["export/users.csv"]
    assert import_member(raw) == CSV


def test_several_data_files_fail_listing_them_and_option_member_picks_one() -> None:
    raw = make_zip({"a.csv": b"id\n1\n", "b.csv": b"id\n2\n", ".c.csv": b"id\n3\n"})
    with pytest.raises(FileRejected) as refused:
        choose(io.BytesIO(raw), None)
    message = str(refused.value)
    assert "2 data files" in message and "'a.csv', 'b.csv'" in message and "option member" in message
    assert ".c.csv" not in message
    assert import_member(raw, "b.csv") == b"id\n2\n"


def test_the_list_of_an_archive_of_many_files_stays_short() -> None:
    raw = make_zip({f"part-{i:05d}-{'x' * 60}.csv": b"id\n" for i in range(1000)})
    with pytest.raises(FileRejected) as refused:
        choose(io.BytesIO(raw), None)
    message = str(refused.value)
    assert "1,000 data files" in message and "and 990 more" in message and len(message) < 800


def test_option_member_naming_a_missing_file_names_it_and_lists_the_data_files() -> None:
    raw = make_zip({"a.csv": b"id\n", "b.csv": b"id\n", ".hidden.csv": b"id\n"})
    with pytest.raises(FileRejected) as refused:
        choose(io.BytesIO(raw), "users.csv")
    message = str(refused.value)
    assert "option member" in message and "'users.csv'" in message and "'a.csv', 'b.csv'" in message
    with pytest.raises(FileRejected, match="no data file '.hidden.csv'"):
        choose(io.BytesIO(raw), ".hidden.csv")


def test_an_archive_without_a_data_file_is_refused() -> None:
    raw = make_zip({"dir/": b"", "__MACOSX/._x": b"", ".DS_Store": b""})
    with pytest.raises(FileRejected, match="the ZIP archive holds no data file"):
        choose(io.BytesIO(raw), None)


def test_two_members_of_one_name_are_refused_when_named() -> None:
    # Two central entries for one local header: an overlap, and an ambiguous name.
    raw = zeros_zip(4 << 20, "data.csv")
    count, dir_size, dir_offset = struct.unpack_from("<HLL", raw, len(raw) - 12)
    entry = raw[dir_offset : dir_offset + dir_size]
    doubled = (
        raw[:dir_offset]
        + entry
        + entry
        + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 2, 2, 2 * dir_size, dir_offset, 0)
    )
    with pytest.raises(FileRejected, match="2 members named 'data.csv'"):
        choose(io.BytesIO(doubled), "data.csv")
    # Each entry alone is still held to the ratio.
    members = data_members(io.BytesIO(doubled))
    assert len(members) == 2
    for info in members:
        with pytest.raises(LimitExceeded, match="max_compression_ratio"):
            open_member(io.BytesIO(doubled), info, DEFAULTS)


def test_member_names_in_messages_are_clipped_and_never_raw_control_characters() -> None:
    evil = "\x1b[31mred\nline\r" + "y" * 300 + ".csv"
    raw = make_zip({evil: b"id\n", "b.csv": b"id\n"})
    with pytest.raises(FileRejected) as refused:
        choose(io.BytesIO(raw), None)
    message = str(refused.value)
    assert all(c.isprintable() for c in message) and len(message) < 300
    assert "\\x1b[31mred\\nline" in message
    with pytest.raises(FileRejected) as refused:
        choose(io.BytesIO(raw), "\n" * 500)
    assert all(c.isprintable() for c in str(refused.value)) and len(str(refused.value)) < 400


# --- members that cannot be read -----------------------------------------------------------------


def test_an_encrypted_member_is_refused_naming_it() -> None:
    raw = set_flags(make_zip({"secret.csv": CSV}), 0x1)
    with pytest.raises(FileRejected, match="'secret.csv' is encrypted"):
        choose(io.BytesIO(raw), None)
    # AES (method 99) is encryption too, whatever the flag says.
    with pytest.raises(FileRejected, match="'secret.csv' is encrypted"):
        choose(io.BytesIO(set_method(make_zip({"secret.csv": CSV}), 99)), None)


@pytest.mark.skipif(shutil.which("zip") is None, reason="the zip command is not installed")
def test_a_member_encrypted_by_zip_with_a_password_is_refused(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_bytes(CSV)
    subprocess.run(["zip", "-q", "-P", "secret", "out.zip", "users.csv"], cwd=tmp_path, check=True)
    fh = io.BytesIO((tmp_path / "out.zip").read_bytes())
    with pytest.raises(FileRejected, match="'users.csv' is encrypted"):
        choose(fh, None)
    # open_member checks it too, for a member it is handed.
    with pytest.raises(FileRejected, match="encrypted"):
        open_member(fh, data_members(fh)[0], DEFAULTS)


@pytest.mark.parametrize(
    ("method", "said"),
    [(zipfile.ZIP_BZIP2, "bzip2 (method 12)"), (zipfile.ZIP_LZMA, "lzma (method 14)")],
)
def test_bzip2_and_lzma_members_are_refused_naming_the_method(method: int, said: str) -> None:
    raw = make_zip({"users.csv": CSV}, method)
    with pytest.raises(FileRejected) as refused:
        choose(io.BytesIO(raw), None)
    assert f"'users.csv' is compressed with {said}" in str(refused.value)


@pytest.mark.parametrize(("method", "said"), [(93, "zstd (method 93)"), (9, "deflate64 (method 9)"), (77, "method 77")])
def test_other_methods_are_refused_by_name_or_number(method: int, said: str) -> None:
    raw = set_method(make_zip({"users.csv": CSV}), method)
    with pytest.raises(FileRejected) as refused:
        choose(io.BytesIO(raw), None)
    assert f"'users.csv' is compressed with {said}, which cannot be read" in str(refused.value)


# --- bombs and lies ------------------------------------------------------------------------------


def test_a_deflate_bomb_is_refused_before_it_is_inflated() -> None:
    raw = zeros_zip(64 << 20)
    [info] = data_members(io.BytesIO(raw))
    assert info.file_size > 200 * info.compress_size  # about 1,000 to 1
    # Refused by open_member itself, before a reader exists: not one byte is inflated.
    with pytest.raises(LimitExceeded) as refused:
        open_member(io.BytesIO(raw), info, DEFAULTS)
    assert "'bomb.csv' declares 67,108,864 bytes decompressed" in str(refused.value)
    assert "max_compression_ratio" in str(refused.value)


def test_a_deflate_bomb_read_as_a_stream_stops_as_soon_as_it_passes_the_ratio() -> None:
    # The reader open_member gives, over the bomb's real inflating stream (whose declared size
    # open_member would refuse at once).
    raw = zeros_zip(64 << 20)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        [info] = zf.infolist()
        reader = MemberReader(zf.open(info), info.filename, DEFAULTS, compressed=info.compress_size)
        bound = DEFAULTS.max_compression_ratio * info.compress_size
        given = 0
        piece = 64 * 1024
        tracemalloc.start()
        try:
            with pytest.raises(LimitExceeded) as refused:
                while data := reader.read(piece):
                    given += len(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert "'bomb.csv' decompresses to more than 200 times its" in str(refused.value)
    assert "max_compression_ratio" in str(refused.value)
    # Stopped within one read of the bound: about a fifth of the 64 MiB, never all of it at once.
    assert given <= bound < reader.given <= bound + piece < 16 << 20
    assert peak < 4 << 20
    # A failed reader gives nothing more.
    with pytest.raises(LimitExceeded):
        reader.read(piece)
    assert reader.given <= bound + piece


def test_max_file_bytes_counts_the_decompressed_bytes() -> None:
    rng = random.Random(7)
    text = b"".join(b"%d,%d\n" % (rng.randrange(10**9), rng.randrange(10**9)) for _ in range(40_000))
    raw = make_zip({"numbers.csv": text})
    limits = Limits(max_file_bytes=len(text) - 1)
    assert len(raw) < limits.max_file_bytes  # the archive itself is within the limit
    with pytest.raises(LimitExceeded, match="'numbers.csv' declares .* max_file_bytes limit"):
        import_member(raw, limits=limits)
    assert import_member(raw, limits=Limits(max_file_bytes=len(text))) == text
    # Counted as they come, too, whatever a member declares.
    reader = MemberReader(io.BytesIO(text), "numbers.csv", limits, compressed=len(text))
    with pytest.raises(LimitExceeded, match="decompressed is longer than the max_file_bytes limit"):
        read_all(reader)
    assert reader.given <= len(text)


def test_a_member_longer_than_it_declares_is_refused_after_its_declared_size() -> None:
    raw = set_file_size(zeros_zip(16 << 20, "data.csv"), 100_000)
    fh = io.BytesIO(raw)
    reader = open_member(fh, choose(fh, None), DEFAULTS)
    given = 0
    with pytest.raises(FileRejected, match="'data.csv' is damaged: its data does not match its CRC-32"):
        while data := reader.read(8192):
            given += len(data)
    assert given <= 100_000
    # Any stream is held to its declared size as it comes.
    meter = MemberReader(io.BytesIO(bytes(5000)), "x.csv", DEFAULTS, compressed=5000, declared=1000)
    with pytest.raises(FileRejected, match="holds more than 5,000 bytes, not the 1,000 it declares"):
        meter.read(5000)


def test_a_member_shorter_than_it_declares_is_refused_without_a_large_allocation() -> None:
    # 1 MiB that says it is 150 MiB (and its CRC is right: only the count can tell).
    data = random.Random(3).randbytes(1 << 20)  # incompressible: the ratio stays near 1
    raw = set_file_size(make_zip({"data.bin": data}), 150 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(
            FileRejected, match="'data.bin' is damaged: it holds only 1,048,576 bytes, not the 157,286,400"
        ):
            import_member(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    # A stored member whose size and checksum both lie fails at the checksum.
    stored = set_file_size(make_zip({"data.bin": data}, zipfile.ZIP_STORED), 2 << 20)
    with pytest.raises(FileRejected, match="'data.bin' is damaged"):
        import_member(stored)


def test_a_member_with_a_bad_checksum_is_refused_naming_it() -> None:
    raw = edit(make_zip({"users.csv": CSV}), fmt="<L", central=16, local=14, value=12345)
    with pytest.raises(FileRejected, match="'users.csv' is damaged: its data does not match its CRC-32"):
        import_member(raw)


def test_a_member_whose_data_runs_into_the_central_directory_is_refused_naming_it() -> None:
    # The archive lost 100,000 bytes from the middle of its member; its directory was moved to match.
    raw = make_zip({"users.csv": random.Random(5).randbytes(200_000)}, zipfile.ZIP_STORED)
    start = 30 + len("users.csv")
    short = bytearray(raw[: start + 100_000] + raw[start + 200_000 :])
    (dir_offset,) = struct.unpack_from("<L", short, len(short) - 6)
    struct.pack_into("<L", short, len(short) - 6, dir_offset - 100_000)
    with pytest.raises(FileRejected, match="the ZIP member 'users.csv' is damaged: its data runs past"):
        import_member(bytes(short))


# --- the central directory ---------------------------------------------------------------------------


def test_an_archive_declaring_too_many_entries_is_refused_before_zipfile_reads_them() -> None:
    raw = as_zip64(make_zip({"users.csv": CSV}), entries=10**9)
    with pytest.raises(
        FileRejected, match="declares 1,000,000,000 entries, more than this service reads \\(100,000\\)"
    ):
        data_members(io.BytesIO(raw))


def test_an_archive_holding_too_many_entries_is_refused_whatever_it_declares() -> None:
    raw = make_zip({"a.csv": b"id\n"}, zipfile.ZIP_STORED)
    count, dir_size, dir_offset = struct.unpack_from("<HLL", raw, len(raw) - 12)
    entry = raw[dir_offset : dir_offset + dir_size]
    many = archive.MAX_MEMBERS + 1
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, many * dir_size, dir_offset, 0)
    with pytest.raises(FileRejected, match="more than 100,000 entries"):
        data_members(io.BytesIO(raw[:dir_offset] + entry * many + end))


def test_an_archive_whose_central_directory_is_too_large_is_refused() -> None:
    raw = bytearray(make_zip({"users.csv": CSV}))
    struct.pack_into("<L", raw, len(raw) - 10, 40 << 20)
    with pytest.raises(FileRejected, match="central directory is 40 MiB, more than this service reads \\(32 MiB\\)"):
        data_members(io.BytesIO(bytes(raw)))


def test_zip64_end_records_that_disagree_are_refused() -> None:
    raw = bytearray(as_zip64(make_zip({"users.csv": CSV})))
    locator = len(raw) - 22 - 20
    struct.pack_into("<Q", raw, locator + 8, 12345)  # the locator points elsewhere
    with pytest.raises(FileRejected, match="^not a valid ZIP archive: its zip64 end records disagree"):
        data_members(io.BytesIO(bytes(raw)))
    struct.pack_into("<Q", raw, locator + 8, len(raw) - 22 - 20 - 56)
    struct.pack_into("<L", raw, locator + 16, 3)  # three disks
    with pytest.raises(FileRejected, match="^not a valid ZIP archive: it spans several disks"):
        data_members(io.BytesIO(bytes(raw)))


def test_no_read_zipfile_asks_for_may_pass_the_central_directory_bound() -> None:
    # The backstop behind the end-record checks, should a zipfile version read other records.
    bounded = archive._Bounded(io.BytesIO(bytes(archive.MAX_DIRECTORY_BYTES + 1)))
    with pytest.raises(FileRejected, match="central directory is 32.0 MiB, more than this service reads"):
        bounded.read()
    bounded.seek(1)
    assert len(bounded.read()) == archive.MAX_DIRECTORY_BYTES


def test_a_zip64_archive_and_one_behind_other_bytes_are_read() -> None:
    raw = make_zip({"users.csv": CSV})
    assert import_member(as_zip64(raw)) == CSV
    # A self-extracting archive: the ZIP comes after a program's bytes.
    assert import_member(random.Random(1).randbytes(5000) + raw) == CSV


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(make_zip({"users.csv": CSV})[:-10], id="cut-at-the-end"),
        pytest.param(make_zip({"users.csv": CSV})[:500], id="cut-in-the-middle"),
        pytest.param(b"PK\x03\x04" + b"not really", id="a-zip-magic-only"),
        pytest.param(CSV, id="a-csv"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_truncated_archive_or_other_file_is_not_a_valid_zip(raw: bytes) -> None:
    with pytest.raises(FileRejected, match="^not a valid ZIP archive: "):
        choose(io.BytesIO(raw), None)


def test_a_central_directory_that_lies_about_where_it_starts_is_refused() -> None:
    raw = bytearray(make_zip({"users.csv": CSV}))
    struct.pack_into("<L", raw, len(raw) - 10, len(raw) + 100)  # larger than the file
    with pytest.raises(FileRejected, match="^not a valid ZIP archive: its central directory would start before"):
        choose(io.BytesIO(bytes(raw)), None)


# --- workbooks -------------------------------------------------------------------------------------


CONTENT_TYPES = (
    b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Override PartName="/book/main.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>'
)


def test_an_xlsx_package_is_recognised_as_a_workbook(tmp_path: Path) -> None:
    assert is_workbook(io.BytesIO(make_zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})))
    # The content types name the workbook, wherever its part is.
    assert is_workbook(io.BytesIO(make_zip({"[Content_Types].xml": CONTENT_TYPES, "book/main.xml": b"<x/>"})))
    book = openpyxl.Workbook()
    book.active.append(["id", "name"])
    book.save(tmp_path / "book.xlsx")
    assert is_workbook(io.BytesIO((tmp_path / "book.xlsx").read_bytes()))
    assert is_workbook(io.BytesIO(make_zip({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet"})))


def test_an_archive_of_data_files_is_not_a_workbook(tmp_path: Path) -> None:
    assert not is_workbook(io.BytesIO(make_zip({"users.csv": CSV})))
    # A workbook inside an archive is a member, not the package.
    book = openpyxl.Workbook()
    book.save(tmp_path / "book.xlsx")
    assert not is_workbook(io.BytesIO(make_zip({"book.xlsx": (tmp_path / "book.xlsx").read_bytes()})))
    other = CONTENT_TYPES.replace(b"spreadsheetml.sheet", b"wordprocessingml.document")
    assert not is_workbook(io.BytesIO(make_zip({"[Content_Types].xml": other, "word/document.xml": b"<x/>"})))
