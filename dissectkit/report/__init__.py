"""Reports of dissection runs: tables, the HTML report with neuron cards and plots, comparisons.

Heavy libraries (matplotlib, pyarrow, torch, jinja2) are imported inside the functions.
"""

from __future__ import annotations

from dissectkit.report.html import HtmlOptions, write_html_report
from dissectkit.report.tables import neuron_rows, write_csv, write_json, write_parquet

__all__ = ["HtmlOptions", "neuron_rows", "write_csv", "write_html_report", "write_json", "write_parquet"]
