"""The ``hkd`` commands, one module per stage; ``hkd/cli.py`` dispatches to them."""
