"""``python -m pncd``: the same as the ``pncd`` command."""

from pncd.cli import main

if __name__ == "__main__":
    main()
