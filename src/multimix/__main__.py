"""``python -m multimix ...``: the same as the ``multimix`` command (also under ``torchrun -m``)."""

import sys

from multimix.cli import main

sys.exit(main())
