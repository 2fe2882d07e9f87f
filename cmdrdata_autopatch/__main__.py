"""`python -m cmdrdata_autopatch COMMAND ...`: the `cmdrdata-autopatch` command without its console script.

For environments where the script directory is not on PATH (a venv that is not activated, `pipx run`,
containers that call the interpreter directly).
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m cmdrdata_autopatch"))
