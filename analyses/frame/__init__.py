"""The shared frame of every analysis: nothing here knows any one analysis.

- ``command``     the shared flags, the CLI body and the output folder (``Outputs``, ``model_main``)
- ``result``      the result base: short ``repr``, ``summary()``, ``to_dataframe()``, metrics.csv rows
- ``html``        an analysis' report.html (Jinja2, autoescaped, offline), also used by ``reports``
- ``figures``     saving figures (PNG + SVG), estimates as arrays
- ``files``       atomic files and all-or-nothing output folders
- ``arguments``   argparse types and checks of ``run()`` arguments, with one-line messages
- ``cli``         how a command ends: ``error: ...`` and exit 2, Ctrl-C (130), SIGTERM (143)
- ``loading``     the model of an analysis: ``--checkpoint``, the default model, a path or a model in Python
- ``sequences``   the deterministic stream of evaluation sequences
- ``provenance``  what produced a result

Machine plumbing (a second core, staging folders, limits) lives below, in :mod:`machine`.
"""
