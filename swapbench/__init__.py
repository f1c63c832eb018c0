"""swapbench: fine-tune a text-to-image diffusion model to swap two concepts and measure the result."""

import time

__version__ = "0.1.0"

STARTED = time.perf_counter()
"""When swapbench was first imported: a command's wall time includes its start-up and imports."""
