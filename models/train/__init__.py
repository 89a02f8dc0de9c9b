"""Training: how a run (or an ensemble of runs that differ only in seed) trains, with Lightning.

- ``cli``               ``python -m models.train``: one run folder, resumable, atomic (``train``, ``main``)
- ``args``              its flags, presets and their checks (``TrainArgs``, ``parse_args``, ``PRESETS``)
- ``lightning_module``  the LightningModule around :class:`models.HookedReverseEncoder`
- ``lightning_import``  PyTorch Lightning imported without Hugging Face transformers
- ``datamodule``        the reverse task's data for Lightning
- ``atomic_checkpoint`` Lightning checkpoints written atomically and checked before a resume
- ``default_model``     the tutorial's recipe, trained once on first use and cached
- ``ensemble`` (``_args``, ``_data``, ``_module``)  many seeds as one vectorised model

Importing this package imports nothing else: Lightning is imported only by the modules that train.
"""
