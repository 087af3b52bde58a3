"""Regenerate sample/acme/users-xlsx.xlsx (run: .venv/bin/python sample/make_xlsx.py).

The workbook holds NATIVE cell types, to exercise the XLSX reader's coercion:
age is an int, active a bool, created_at a naive datetime (read as UTC), and one
external_id is the number 1001 (imported as the string "1001"). One row has no
email (invalid: email is required) and two empty rows trail the data (ignored).
openpyxl is what pyexcel-xlsx installs; it is in requirements.txt.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from openpyxl import Workbook

HEADER = ["external_id", "email", "first_name", "last_name", "role", "age", "active", "created_at"]
ROWS = [
    ["X-1", "ana@example.com", "Ana", "Lima", "student", 20, True, dt.datetime(2024, 4, 1, 9, 30)],
    [1001, "numeric.id@example.com", "Numeric", "Id", "teacher", 45, False, dt.datetime(2024, 4, 2, 14, 0, 5)],
    ["X-3", "chloe@example.fr", "Chloé", "Bernard", "admin", 38, True, dt.datetime(2024, 4, 3)],
    ["X-4", "kenji@example.jp", "健二", "佐藤", "student", 17, True, dt.datetime(2024, 4, 4, 8, 15)],
    ["X-5", None, "Nomail", "Person", "student", 29, False, dt.datetime(2024, 4, 5, 10, 0)],
    ["X-6", "olga@example.com", "Ольга", "Иванова", None, None, None, None],
]
TRAILING_EMPTY_ROWS = 2


def build(target: Path) -> None:
    """Write the workbook to target."""
    book = Workbook()
    sheet = book.active
    sheet.title = "users"
    sheet.append(HEADER)
    for row in ROWS:
        sheet.append(row)
    # Two empty trailing rows: formatted cells without values, as spreadsheets leave them.
    first_empty = len(ROWS) + 2
    for offset in range(TRAILING_EMPTY_ROWS):
        for column in range(1, len(HEADER) + 1):
            sheet.cell(row=first_empty + offset, column=column).number_format = "@"
            sheet.cell(row=first_empty + offset, column=column).value = None
    for column in "ABCDEFGH":
        sheet.column_dimensions[column].width = 22
    for row in range(2, len(ROWS) + 2):
        sheet.cell(row=row, column=8).number_format = "yyyy-mm-dd hh:mm:ss"
    book.save(target)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "acme" / "users-xlsx.xlsx"
    build(out)
    print(f"wrote {out}")
