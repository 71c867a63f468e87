"""The `genops` command line: `main` (genops.cli.main) parses, runs and turns failures into exit codes; the
commands and their dispatch to the stages are in genops.cli.commands."""

from genops.cli.main import main

__all__ = ["main"]
