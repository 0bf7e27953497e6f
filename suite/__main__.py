"""``python -m mtbench``: the same as the ``mtbench`` command."""

from mtbench.cli import main

main()
