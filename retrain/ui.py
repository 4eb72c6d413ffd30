"""The two Rich consoles every printing module shares (stdout for results, stderr for status).

Lives outside `retrain.cli` so that library code (campaign reports) can print without
importing the CLI layer.
"""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
