"""How a text file's bytes become text: the encoding a BOM announces or the options name, the
codec and BOM length its lines are decoded with, and the errors that name a line the codec cannot
decode (a NUL character, undecodable bytes)."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import BinaryIO

from service.errors import FileRejected

ZIP_MAGIC = b"PK\x03\x04"

# Longest BOM first: the UTF-32 LE BOM begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Codecs whose byte order comes from a BOM; without one CPython assumes little endian.
_WIDE = {
    "utf-16": ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")),
    "utf-32": ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be")),
}
_OWN_BOM = {
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}
# These encode ASCII as ASCII yet carry shift state from line to line.
_STATEFUL = {"utf-7", "hz"}
_ASCII_SAMPLE = "\n\r\t ,;|\"'=#\\azAZ09"


def sniff_encoding(head: bytes) -> str:
    """Name the encoding a BOM announces, else UTF-8."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return "utf-8"


def validate_encoding(name: str) -> str:
    """Return the encoding option unchanged if Python can decode text with it."""
    try:
        # Non-empty input: Python skips the codec entirely when decoding b"".
        b"\0\0\0\0".decode(name)
    except (LookupError, UnicodeError):
        raise FileRejected(
            f"option encoding: {name!r} is not a text encoding Python knows (examples: utf-8, utf-16, latin-1, cp1252)"
        ) from None
    return name


@dataclass(frozen=True)
class Codec:
    """How the bytes of a text file are decoded, after its BOM."""

    label: str  # the encoding as named in FileFormat, for messages
    name: str  # BOM-less python codec decoding the lines
    bom_len: int
    splittable: bool  # a b'\n' byte always ends a line, so lines decode on their own


def ascii_compatible(name: str) -> bool:
    """Tell whether a codec writes ASCII as ASCII without shift state, so b'\\n' splits lines."""
    base = codecs.lookup(name).name
    if base in _STATEFUL or base.startswith("iso2022"):
        return False
    try:
        return _ASCII_SAMPLE.encode(base) == _ASCII_SAMPLE.encode("ascii")
    except UnicodeError:
        return False


def resolve_codec(label: str, head: bytes) -> Codec:
    """Pick the BOM-less codec and BOM length for a file whose first bytes are head."""
    base = codecs.lookup(validate_encoding(label)).name
    if base in ("utf-8", "utf-8-sig"):
        return Codec(label, "utf-8", 3 if head.startswith(codecs.BOM_UTF8) else 0, True)
    if base in _WIDE:
        for bom, name in _WIDE[base]:
            if head.startswith(bom):
                return Codec(label, name, len(bom), False)
        return Codec(label, _WIDE[base][0][1], 0, False)
    if base in _OWN_BOM:
        bom = _OWN_BOM[base]
        return Codec(label, base, len(bom) if head.startswith(bom) else 0, False)
    return Codec(label, base, 0, ascii_compatible(base))


def text_codec(fh: BinaryIO, label: str) -> Codec:
    """Resolve the codec of an open text file, refusing a workbook passed off as text."""
    fh.seek(0)
    head = fh.read(4)
    if head.startswith(ZIP_MAGIC):
        raise FileRejected(
            "the file is a zip archive (an XLSX workbook?), not text; "
            "give it the .xlsx extension or the option format=xlsx"
        )
    return resolve_codec(label, head)


def nul_error(codec: Codec, line: int) -> FileRejected:
    """A NUL character: the file is binary or in another encoding."""
    return FileRejected(
        "the line contains a NUL character: the file is binary or not in the "
        f"{codec.label} encoding (give the right encoding option)",
        line=line,
    )


def undecodable_error(codec: Codec, byte: int, column: int | None, line: int) -> FileRejected:
    """Bytes the codec cannot decode."""
    where = f" at byte {column + 1} of the line" if column is not None else ""
    return FileRejected(
        f"the file is not valid {codec.label} text: byte 0x{byte:02x}{where} cannot be "
        "decoded (save the file as UTF-8, or give its encoding in the encoding option)",
        line=line,
    )
