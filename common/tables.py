"""The one table writer: every Markdown and terminal table of the repo goes through here (tabulate)."""
from tabulate import tabulate


def table(headers, rows, fmt="github"):
    """rows (lists of cells, already formatted as strings) under headers, as a Markdown table
    ("github") or, with fmt="simple", a plain one for the terminal. Cells are left as they are
    (no number parsing), so "78.43 ± 0.16" and "−0.06" print as written."""
    return tabulate(rows, headers, tablefmt=fmt, disable_numparse=True, colalign=None)
