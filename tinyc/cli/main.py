"""Placeholder: the typer app is being written (see the CLI issue)."""
import typer

app = typer.Typer()
