"""``python -m infertide``: the same as the ``infertide`` console script."""

from infertide.cli import main

main()
