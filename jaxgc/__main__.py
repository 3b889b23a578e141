"""``python -m jaxgc``: the ``jaxgc`` command line."""

import sys

from jaxgc.cli import main

sys.exit(main())
