"""``python -m unetlite.infer.cli``: the ``unetlite`` command."""
import sys

from . import main

sys.exit(main())
