"""``python -m swapbench``: what ``accelerate launch -m swapbench`` and ``torchrun -m swapbench`` start."""

import sys

from swapbench.cli import main

sys.exit(main())
