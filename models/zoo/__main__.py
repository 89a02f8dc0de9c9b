"""``python -m models.zoo``: see :mod:`models.zoo.cli`."""

from machine.quick_exit import exit_process
from models.zoo.cli import main

exit_process(main())
