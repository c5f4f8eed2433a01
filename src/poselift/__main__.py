"""``python -m poselift`` = the ``poselift`` command (e.g. ``torchrun --nproc_per_node 2 -m poselift train ...``)."""

import sys

from poselift.cli import main

sys.exit(main())
