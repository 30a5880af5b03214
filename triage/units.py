"""Output rules decided once: byte counts for people, and strings that may come from evidence,
hash sets or context files made inert for terminals and spreadsheets."""
from __future__ import annotations

import csv

_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def volume_name(index, kind: str, length: int, offset: int) -> str:
    """A volume, named one way everywhere: "volume 6 (BitLocker, 16 MiB at 44,040,192)"."""
    return f"volume {index} ({kind or 'not readable'}, {human_bytes(length)} at {int(offset):,})"


def human_bytes(n: int) -> str:
    """1073741824 -> '1 GiB', 1536 -> '1.5 KiB', 512 -> '512 bytes' (binary units)."""
    n = int(n)
    for unit, size in _UNITS:
        if abs(n) >= size:
            text = f"{n / size:.1f}"
            # one decimal, none when it is 0: "52 MiB" whether the bytes are 52 MiB or 51.98
            return f"{text[:-2] if text.endswith('.0') else text} {unit}"
    return f"{n} byte{'' if n == 1 else 's'}"


_BIDI = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


def terminal_safe(text: str) -> str:
    """A string from evidence, fit for a terminal: control and bidi characters shown escaped
    (`\\x1b`, `\\u202e`), so a file name cannot move the cursor, retitle the window or reverse
    the line. JSON output keeps the exact string."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif o in _BIDI:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell that a spreadsheet will not run: text starting with = + - @ tab or CR gets a
    leading apostrophe (OWASP's advice). Numbers stay numbers; JSON exports keep exact values.
    A boolean is written as JSON writes it (true, false), not as Python's True and False."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class SafeDictWriter(csv.DictWriter):
    """csv.DictWriter with RFC 4180 line ends (CRLF: a lone CR inside a field is quoted, so it
    cannot forge a row) and every cell passed through `csv_safe`."""

    def __init__(self, fh, fieldnames, **kw):
        kw.setdefault("lineterminator", "\r\n")
        kw.setdefault("quoting", csv.QUOTE_MINIMAL)
        super().__init__(fh, fieldnames, **kw)

    def writerow(self, rowdict):
        return super().writerow({k: csv_safe(v) for k, v in rowdict.items()})

    def writerows(self, rowdicts):
        # csv.DictWriter.writerows does not go through writerow: without this, every cell
        # written by writerows would reach the file unneutralised
        for row in rowdicts:
            self.writerow(row)
