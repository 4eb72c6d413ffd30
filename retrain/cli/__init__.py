"""Command-line interface. Thin Typer commands: parse, call the library, print."""
