"""One package per question, each runnable as ``python -m analyses.<name>``, all of the same shape::

    analyses/<name>/__init__.py     run, write_outputs and the result class (the Python API)
    analyses/<name>/__main__.py     the command line (build_parser, main)
    analyses/<name>/measure.py      run(): what is measured, streamed over batches
    analyses/<name>/result.py       the result object: metrics.json, metrics.csv, summary()
    analyses/<name>/figures.py      make_figures(result, directory) -> captions
    analyses/<name>/report.html.j2  the report section

``analyses.frame`` holds what they share (flags, output folder, result base, report rendering). An
analysis imports ``models``, ``interp`` and ``analyses.frame``, never another analysis or ``reports``.
"""
