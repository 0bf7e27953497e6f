"""``python -m mtbench.cli``: the command line."""

from mtbench.cli import main

main()
