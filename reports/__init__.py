"""The report of one model and the index across models: one self-contained offline HTML file each.

``python -m reports.build`` runs every analysis of a model (``reports.pipeline``), reads what they
wrote and renders ``reports.full_report``; ``reports.index`` compares several reports. An analysis'
own report.html is rendered by ``analyses.frame.html``, which this package uses too.
"""
