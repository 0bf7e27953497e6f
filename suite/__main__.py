"""``python -m mtbench``: the same as the ``mtbench`` command."""

from .cli import main

main()
