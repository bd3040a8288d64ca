"""`python -m cli`: the `seedbed` command."""

from cli.app import main

main()
