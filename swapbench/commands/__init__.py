"""The command layer: each subcommand's argument parsing and the orchestration of the layers below.

Nothing below imports this package; ``swapbench.cli`` dispatches to one module per subcommand.
"""
