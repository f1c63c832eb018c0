"""swapbench: fine-tune a text-to-image diffusion model to swap two concepts and measure the result."""

__version__ = "0.1.0"
