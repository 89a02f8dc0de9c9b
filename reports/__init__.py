"""Self-contained offline HTML reports rendered from analysis results (metrics.json documents)."""

from reports.render import render_report, write_report

__all__ = ["render_report", "write_report"]
