"""``python -m imnn.cli``: the ``imnn`` command."""
import sys

from . import main

sys.exit(main())
