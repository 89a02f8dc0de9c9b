"""The model zoo: a grid of runs (seeds × heads × layers × PE × widths × lengths) trained on Ray.

- ``cli``     ``python -m models.zoo``: the command, its flags and ``zoo.json``
- ``plan``    the grid: which runs, their ``models.train`` command lines, which are finished
- ``engine``  where runs train: Ray tasks (embedded instance or ``--address``) or in this process
- ``task``    one Ray task: train a run or an ensemble, return its folder as bytes

Nothing imports this package but its command; Ray itself is driven through :mod:`machine.cluster`.
"""
