"""scan_chunks, and the block reader behind iter_records.

Two oracles: the line-by-line reader the block reader replaced (kept here as the reference:
same records, same positions, same errors on the same lines), and the chunking rule of the
parse stage applied to one full iter_records pass (same cuts; each cut reads back as its
records).
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from service.errors import FileRejected, LimitExceeded
from service.formats import (
    Cut,
    FileFormat,
    Header,
    Limits,
    Record,
    compressed,
    decode_records,
    delimited,
    detect_format,
    encode_records,
    iter_records,
    kv,
    read_header,
    scan_chunks,
    splittable,
    text,
)
from service.formats import limits as limits_module
from service.formats.decoding import ZIP_MAGIC

CSV = FileFormat("csv", "utf-8", ",", None)
KV = FileFormat("kv", "utf-8", "", None)
DEFAULTS = Limits()
HUGE = 2**40
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Refusal = tuple[str, str, int | None]


# ---------------------------------------------------------------- helpers


def outcome(produce: Callable[[], Iterable[Any]]) -> tuple[list[Any], Refusal | None]:
    """What a reader gives before it refuses the file (if it does), and the refusal."""
    items: list[Any] = []
    try:
        for item in produce():
            items.append(item)
    except FileRejected as exc:
        return items, (type(exc).__name__, str(exc), exc.line)
    return items, None


@contextmanager
def block_bytes(size: int) -> Iterator[None]:
    """Make BlockSource read size bytes at a time (tiny blocks: records across many blocks)."""
    saved = text.BLOCK_BYTES
    text.BLOCK_BYTES = size
    try:
        yield
    finally:
        text.BLOCK_BYTES = saved


def expected_cuts(
    records: list[Record],
    header: Header,
    chunk_rows: int,
    chunk_bytes: int,
    bytewise: bool,
    complete: bool,
    with_records: bool = False,
) -> list[Cut]:
    """The parse stage's chunking rule over one full pass (complete: the pass was not refused).

    With with_records (a spreadsheet), each cut carries its records: the one read of the sheet."""
    cuts: list[Cut] = []
    held: list[Record] = []
    first_row, first_line, start = 1, header.data_line, header.data_start
    count, size, previous_end = 0, 0, header.data_start
    keys: set[str] = set()
    for record in records:
        if isinstance(record.cells, dict):
            keys.update(record.cells)
        count += 1
        held.append(record)
        if bytewise:
            size, previous_end = size + record.end - previous_end, record.end
        if count >= chunk_rows or size >= chunk_bytes:
            cuts.append(Cut(first_row, first_line, start, count, frozenset(keys), held if with_records else None))
            first_row, first_line, start = record.source_row + 1, record.next_line, record.end
            count, size, keys, held = 0, 0, set(), []
    if count and complete:
        cuts.append(Cut(first_row, first_line, start, count, frozenset(keys), held if with_records else None))
    return cuts


def check_scan(path: Path, fmt: FileFormat, header: Header, limits: Limits, chunk_rows: int, chunk_bytes: int) -> None:
    """scan_chunks agrees with one full pass, and each of its cuts reads back as its records."""
    whole, refusal = outcome(lambda: iter_records(path, fmt, header, limits))
    cuts, scan_refusal = outcome(lambda: scan_chunks(path, fmt, header, limits, chunk_rows, chunk_bytes))
    assert scan_refusal == refusal
    if splittable(fmt):
        bytewise = fmt.kind != "xlsx"
        expected = expected_cuts(whole, header, chunk_rows, chunk_bytes, bytewise, refusal is None, not bytewise)
        assert cuts == expected
    else:
        assert cuts == expected_cuts(whole, header, HUGE, HUGE, False, refusal is None)
    read_back: list[Record] = []
    for cut in cuts:
        chunk = list(
            iter_records(
                path,
                fmt,
                header,
                limits,
                start=cut.start,
                first_row=cut.first_row,
                first_line=cut.first_line,
                max_records=cut.rows,
            )
        )
        assert len(chunk) == cut.rows
        if cut.records is not None:  # what the chunk reads back from the customer DB
            assert list(decode_records(encode_records(cut.records))) == chunk
        read_back += chunk
    assert read_back == whole[: len(read_back)]
    if refusal is None:
        assert read_back == whole


# ---------------------------------------------------------------- the reference reader


def reference_header(path: Path, fmt: FileFormat, limits: Limits) -> Header:
    """read_header as it was, line by line with LineReader."""
    with path.open("rb") as fh:
        codec = text.text_codec(fh, fmt.encoding)
        top = codec.bom_len if codec.splittable else 0
        lines = text.LineReader(fh, codec, limits.max_record_bytes, top, 1)
        if fmt.kind == "kv":
            for line in lines:
                lines.mark()
                if line.strip():
                    return Header(names=[], data_start=top, data_line=1)
            raise FileRejected("the file is empty: it has no key=value line")
        for record in _reference_csv(lines, fmt, limits):
            return Header([name.strip() for name in record.cells], record.end, record.next_line)
        raise FileRejected("the file is empty: it has no header line")


def reference_records(path: Path, fmt: FileFormat, header: Header, limits: Limits) -> Iterator[Record]:
    """iter_records as it was, line by line with LineReader."""
    with path.open("rb") as fh:
        codec = text.text_codec(fh, fmt.encoding)
        lines = text.LineReader(fh, codec, limits.max_record_bytes, header.data_start, header.data_line)
        yield from (_reference_kv if fmt.kind == "kv" else _reference_csv)(lines, fmt, limits)


def _reference_csv(lines: text.LineReader, fmt: FileFormat, limits: Limits) -> Iterator[Record]:
    delimited._allow_fields_up_to(limits.max_record_bytes)
    rows = csv.reader(iter(lines), delimiter=fmt.delimiter, quotechar='"', doublequote=True, strict=False)
    row = 1
    try:
        for cells in rows:
            if lines.exhausted:
                raise FileRejected(
                    "a quoted field is never closed: the file ends inside it (check for a stray '\"')",
                    line=lines.record_line,
                )
            if lines.size - lines.record_size > limits.max_field_bytes:
                delimited._check_fields(cells, lines.codec.name, limits.max_field_bytes, lines.record_line)
            if (cells and cells[0].strip()) or any(cell.strip() for cell in cells):
                yield Record(row, lines.record_line, lines.pos, cells, next_line=lines.next_line)
                row += 1
            lines.mark()
    except csv.Error as exc:
        raise FileRejected(f"the record is not valid CSV ({exc})", line=lines.record_line) from None


def _reference_kv(lines: text.LineReader, fmt: FileFormat, limits: Limits) -> Iterator[Record]:
    row = 1
    distinct = limits_module.DistinctKeys(
        limits, lines.codec.name, "a key=value file"
    )  # the file's keys are its columns: max_columns of them
    for line in lines:
        lines.mark()
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        cells, error = kv.parse_line(body)
        if len(body) > limits.max_field_bytes // 4:
            kv._check_fields(cells, lines.codec.name, limits.max_field_bytes, lines.line)
        distinct.add(cells, lines.line)
        message = None if error is None else f"line {lines.line}: {error}"
        yield Record(row, lines.line, lines.pos, cells, message, next_line=lines.next_line)
        row += 1


# ---------------------------------------------------------------- generated files

FIELD = st.text(alphabet='ab ,;\t"\n\ré山', max_size=10)
# Lines slipped between records: blank ones, all-delimiter ones, spaces, empty quotes.
FILLERS = ["", "", "", "\n", "\r\n", "  \n", "{d}{d}{d}\n", "{d}\n", '""\n', '" "{d}\n', " {d} \r\n"]
# One byte that makes a file bad (or not): NUL, invalid UTF-8, a lone CR, a stray quote...
DAMAGE = [b"\0", b"\xff", b"\r", b'"', b"\n", b"\xc3", b"#", b"=", b" "]
KEY = st.text(alphabet="abé_.", min_size=1, max_size=3)
VALUE = st.text(alphabet='ab é"\\=#', max_size=5)
# Bytes that matter to the readers, mixed with arbitrary ones (as in test_hostile_readers).
SOUP = st.lists(
    st.sampled_from([b'"', b",", b"\t", b"\n", b"\r", b"\r\n", b"=", b"\\", b" ", b"#", b"a", b"\xc3\xa9", b"\0"])
    | st.binary(max_size=3),
    max_size=60,
).map(b"".join)


@st.composite
def text_bytes(draw: st.DrawFn, body: str) -> bytes:
    """Encode a file body: UTF-8 (sometimes with a BOM, sometimes damaged) or, now and then, UTF-16."""
    if draw(st.booleans()):
        body = body.rstrip("\r\n")  # no newline at the end
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16"]))
    data = body.encode(encoding)
    if encoding != "utf-16" and draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(DAMAGE)) + data[at:]
    return data


@st.composite
def delimited_files(draw: st.DrawFn, delimiter: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(["id", "name"])
    for row in draw(st.lists(st.lists(FIELD, min_size=1, max_size=3), max_size=15)):
        out.write(draw(st.sampled_from(FILLERS)).format(d=delimiter))
        writer.writerow(row)
    return draw(text_bytes(out.getvalue()))


def _pair(key: str, value: str) -> str:
    if value and not any(c in value for c in ' "\\=#'):
        return f"{key}={value}"
    return key + '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def kv_files(draw: st.DrawFn) -> bytes:
    lines = []
    for kind in draw(st.lists(st.sampled_from(["pairs", "pairs", "pairs", "comment", "blank", "bad"]), max_size=12)):
        if kind == "pairs":
            pairs = draw(st.lists(st.tuples(KEY, VALUE), min_size=1, max_size=3))
            lines.append(" ".join(_pair(k, v) for k, v in pairs))
        elif kind == "comment":
            lines.append("  # a=1 note")
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
        else:
            lines.append(draw(st.sampled_from(["oops", 'a="open', "a=1 a=2", "=x", 'k=x"y'])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return draw(text_bytes("".join(line + newline for line in lines)))


LIMITS = st.builds(
    Limits,
    max_field_bytes=st.sampled_from([3, 10, 40, 1024**2, 1024**2]),
    max_record_bytes=st.sampled_from([12, 30, 80, 10 * 1024**2, 10 * 1024**2]),
)
CHUNK_ROWS = st.sampled_from([1, 2, 3, 5, 2**31 - 1])
CHUNK_BYTES = st.sampled_from([1, 12, 40, 150, HUGE])
BLOCKS = st.sampled_from([1, 2, 5, 16, 64, 256 * 1024])


def check_file(data: bytes, kind: str, limits: Limits, block: int, chunk_rows: int, chunk_bytes: int) -> None:
    """The block reader matches the reference, and scan_chunks matches the full pass."""
    # Bytes that start as a compressed stream or a zip does are read as one, not as text (the
    # reference reads text only): tests/e2e/test_compressed.py and test_archive.py cover them.
    assume(not compressed.sniff(data) and not data.startswith(ZIP_MAGIC))
    with tempfile.TemporaryDirectory() as folder, block_bytes(block):
        path = Path(folder) / f"input.{kind}"
        path.write_bytes(data)
        fmt = detect_format(path, {"format": kind})
        got, refusal = outcome(lambda: [read_header(path, fmt, limits)])
        assert (got, refusal) == outcome(lambda: [reference_header(path, fmt, limits)])
        if refusal is not None:
            return
        header = got[0]
        whole, refusal = outcome(lambda: iter_records(path, fmt, header, limits))
        assert (whole, refusal) == outcome(lambda: reference_records(path, fmt, header, limits))
        # What the examples cover: pytest --hypothesis-show-statistics
        event(f"{fmt.encoding}, refused: {refusal[1].split(':')[1][:25] if refusal else 'no'}")
        event(f"records: {min(len(whole), 3)}")
        check_scan(path, fmt, header, limits, chunk_rows, chunk_bytes)


# ---------------------------------------------------------------- properties


@SETTINGS
@given(data=delimited_files(","), limits=LIMITS, block=BLOCKS, chunk_rows=CHUNK_ROWS, chunk_bytes=CHUNK_BYTES)
def test_csv_scan_and_records_agree_with_the_reference_and_one_pass(
    data: bytes, limits: Limits, block: int, chunk_rows: int, chunk_bytes: int
) -> None:
    check_file(data, "csv", limits, block, chunk_rows, chunk_bytes)


@SETTINGS
@given(data=delimited_files("\t"), limits=LIMITS, block=BLOCKS, chunk_rows=CHUNK_ROWS, chunk_bytes=CHUNK_BYTES)
def test_tsv_scan_and_records_agree_with_the_reference_and_one_pass(
    data: bytes, limits: Limits, block: int, chunk_rows: int, chunk_bytes: int
) -> None:
    check_file(data, "tsv", limits, block, chunk_rows, chunk_bytes)


@SETTINGS
@given(data=kv_files(), limits=LIMITS, block=BLOCKS, chunk_rows=CHUNK_ROWS, chunk_bytes=CHUNK_BYTES)
def test_kv_scan_and_records_agree_with_the_reference_and_one_pass(
    data: bytes, limits: Limits, block: int, chunk_rows: int, chunk_bytes: int
) -> None:
    check_file(data, "kv", limits, block, chunk_rows, chunk_bytes)


@SETTINGS
@given(
    kind=st.sampled_from(["csv", "tsv", "kv"]),
    soup=SOUP,
    limits=LIMITS,
    block=BLOCKS,
    chunk_rows=CHUNK_ROWS,
    chunk_bytes=CHUNK_BYTES,
)
def test_byte_soup_gives_the_same_records_and_refusals_as_the_reference(
    kind: str, soup: bytes, limits: Limits, block: int, chunk_rows: int, chunk_bytes: int
) -> None:
    head = {"csv": b"a,b\n", "tsv": b"a\tb\n", "kv": b""}[kind]
    check_file(head + soup, kind, limits, block, chunk_rows, chunk_bytes)


CELL = st.one_of(st.none(), st.integers(-5, 5), st.sampled_from(["", "  ", "x", "é"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.lists(CELL, min_size=1, max_size=3), max_size=10),
    leading=st.integers(0, 2),
    chunk_rows=st.integers(1, 4),
)
def test_xlsx_scan_agrees_with_one_pass(rows: list[list[Any]], leading: int, chunk_rows: int) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    for _ in range(leading):
        sheet.append([None])
    sheet.append(["a", "b", "c"])
    for row in rows:
        sheet.append(row)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.xlsx"
        book.save(path)
        fmt = detect_format(path, {})
        header = read_header(path, fmt, DEFAULTS)
        # chunk_bytes (the cells' text, for a workbook) has a test of its own in test_hostile_readers
        check_scan(path, fmt, header, DEFAULTS, chunk_rows, HUGE)


# ---------------------------------------------------------------- examples


def write(tmp_path: Path, data: bytes, name: str = "input.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def scan(path: Path, fmt: FileFormat = CSV, chunk_rows: int = 2, chunk_bytes: int = HUGE) -> list[Cut]:
    return list(scan_chunks(path, fmt, read_header(path, fmt, DEFAULTS), DEFAULTS, chunk_rows, chunk_bytes))


def test_chunks_end_after_chunk_rows_records_and_blank_lines_go_with_the_next_chunk(tmp_path: Path) -> None:
    path = write(tmp_path, b'id,note\n1,a\n\n2,"b\nc"\n,,\n3,d\n4,e\n5,f')
    assert scan(path) == [Cut(1, 2, 8, 2), Cut(3, 6, 21, 2), Cut(5, 9, 32, 1)]
    check_scan(path, CSV, read_header(path, CSV, DEFAULTS), DEFAULTS, 2, HUGE)


def test_chunks_also_end_at_the_record_that_brings_them_to_chunk_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, b"id\n" + b"".join(b"%03d\n" % n for n in range(10)))  # 4 bytes a record
    assert [cut.rows for cut in scan(path, chunk_rows=100, chunk_bytes=10)] == [3, 3, 3, 1]
    assert [cut.start for cut in scan(path, chunk_rows=100, chunk_bytes=10)] == [3, 15, 27, 39]
    assert [cut.rows for cut in scan(path, chunk_rows=2, chunk_bytes=10)] == [2, 2, 2, 2, 2]


def test_a_file_without_records_gives_no_chunk(tmp_path: Path) -> None:
    assert scan(write(tmp_path, b"id,name\n\n,\n")) == []
    assert scan(write(tmp_path, b"# only a comment\n", "input.kv"), KV) == []


def test_a_utf16_file_is_one_chunk_whatever_chunk_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffid\r\n1\r\n2\r\n\r\n3\r\n".encode("utf-16-le"))
    fmt = detect_format(path, {})
    header = read_header(path, fmt, DEFAULTS)
    assert scan(path, fmt, chunk_rows=1, chunk_bytes=1) == [Cut(1, header.data_line, header.data_start, 3)]
    check_scan(path, fmt, header, DEFAULTS, 1, 1)


def test_kv_chunks_carry_the_keys_of_their_records(tmp_path: Path) -> None:
    path = write(tmp_path, b'# users\na=1 b=2\n\nc=3 oops d=4\nB=x\n e="q r" ', "input.kv")
    assert scan(path, KV) == [
        Cut(1, 1, 0, 2, frozenset({"a", "b", "c"})),
        Cut(3, 5, 30, 2, frozenset({"B", "e"})),
    ]


def test_xlsx_chunks_are_counted_in_sheet_rows(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    for row in [["id"], [1], [None], [2], [3]]:
        book.active.append(row)
    path = tmp_path / "input.xlsx"
    book.save(path)
    fmt = FileFormat("xlsx", "", "", None)
    cuts = scan(path, fmt, chunk_rows=2)
    assert [(c.first_row, c.first_line, c.start, c.rows) for c in cuts] == [(1, 2, 2, 2), (3, 5, 5, 1)]
    # Each carries its records, with their sheet rows (row 3 is empty: no record).
    assert [[(r.source_row, r.line, r.cells) for r in c.records or []] for c in cuts] == [
        [(1, 2, [1]), (2, 4, [2])],
        [(3, 5, [3])],
    ]


def test_a_bad_line_is_refused_after_the_chunks_before_it_naming_the_same_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"id\n1\n2\n3\n4\n5\x00\n6\n")
    header = read_header(path, CSV, DEFAULTS)
    cuts, refusal = outcome(lambda: scan_chunks(path, CSV, header, DEFAULTS, 2, HUGE))
    assert cuts == [Cut(1, 2, 3, 2), Cut(3, 4, 7, 2)]
    assert refusal is not None and refusal[2] == 6 and "NUL" in refusal[1]
    assert outcome(lambda: iter_records(path, CSV, header, DEFAULTS))[1] == refusal


def test_an_unterminated_quote_is_refused_by_the_scan_naming_where_its_record_starts(tmp_path: Path) -> None:
    path = write(tmp_path, b'a\n1\n"2\n3\n')
    with pytest.raises(FileRejected, match="quoted field is never closed") as err:
        scan(path)
    assert err.value.line == 3


def test_a_record_over_the_limit_spanning_blocks_is_refused_naming_its_first_line(tmp_path: Path) -> None:
    limits = Limits(max_field_bytes=1000, max_record_bytes=30)
    path = write(tmp_path, b'a,b\n1,2\n3,"' + b"0123456789\n" * 4 + b'"\n')
    header = read_header(path, CSV, limits)
    for block in (1, 4, 16, 1024):
        with block_bytes(block), pytest.raises(LimitExceeded, match="max_record_bytes") as err:
            list(scan_chunks(path, CSV, header, limits, 10, HUGE))
        assert err.value.line == 3


def test_a_field_over_the_limit_across_many_blocks_is_measured_from_its_record_start(tmp_path: Path) -> None:
    limits = Limits(max_field_bytes=10, max_record_bytes=1000)
    path = write(tmp_path, b'a\n"' + b"x\n" * 6 + b'"\n')  # one field of 12 bytes over 7 lines
    header = read_header(path, CSV, limits)
    for block in (1, 2, 3, 1024):
        with block_bytes(block):
            for produce in (
                lambda: scan_chunks(path, CSV, header, limits, 10, HUGE),
                lambda: iter_records(path, CSV, header, limits),
            ):
                with pytest.raises(LimitExceeded, match="max_field_bytes") as err:
                    list(produce())
                assert err.value.line == 2


def test_a_line_without_newline_is_refused_by_the_scan_without_being_read_whole(tmp_path: Path) -> None:
    limits = Limits(max_record_bytes=1024)
    path = write(tmp_path, b"a\n1\n" + b"x" * 5_000_000)
    header = read_header(path, CSV, limits)
    with pytest.raises(LimitExceeded, match=r"max_record_bytes limit \(1 KiB\)") as err:
        list(scan_chunks(path, CSV, header, limits, 10, HUGE))
    assert err.value.line == 3


def test_a_field_over_the_limit_in_a_big_block_is_refused(tmp_path: Path) -> None:
    limits = Limits(max_field_bytes=100, max_record_bytes=10_000)
    path = write(tmp_path, b"a,b\n" + b"1,2\n" * 100 + b"3," + b"y" * 101 + b"\n")
    header = read_header(path, CSV, limits)
    with pytest.raises(LimitExceeded, match="max_field_bytes") as err:
        list(scan_chunks(path, CSV, header, limits, 10, HUGE))
    assert err.value.line == 102


def test_chunk_sizes_must_be_positive(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\n1\n")
    with pytest.raises(ValueError, match="positive"):
        scan(path, chunk_rows=0)


def test_records_compare_by_value_and_are_not_frozen() -> None:
    record = Record(1, 2, 3, ["a"], None, 3)
    assert record == Record(1, 2, 3, ["a"], next_line=3)
    assert record != Record(1, 2, 3, ["b"], None, 3)
    assert not hasattr(record, "__dict__")  # slots: small and quick to build
