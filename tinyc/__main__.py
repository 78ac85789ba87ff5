"""`python -m tinyc` runs the command line."""

from tinyc.cli.main import app

app(prog_name="tinyc")
