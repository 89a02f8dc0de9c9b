"""``python -m models.train``: see :mod:`models.train.cli`."""

from machine.quick_exit import exit_process
from models.train.cli import main

exit_process(main())
