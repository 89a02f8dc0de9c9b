"""One module per question, each runnable as ``python -m analyses.<name>`` (see ``analyses.common``)."""
