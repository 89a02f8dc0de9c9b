"""Model files: every checkpoint format, read through one door and written all or nothing.

- ``checkpoints``   read and write the project's ``model.pt``, the tutorial's PyTorch ``.ckpt`` and Flax
                    msgpack checkpoints (``load_checkpoint``, ``save_model``), with their checks
- ``flax_msgpack``  Flax's msgpack checkpoint encoding, read and written without Flax or JAX
- ``integrity``     atomic writes, the sha256 record of each folder (``SHA256SUMS``), safe reading

``models.load_model`` (in :mod:`models.loading`) is the door above this room: it also knows the
default model, which :mod:`models.train` trains on first use.
"""
