"""Site-wide activation: track every OpenAI call of every program this Python interpreter runs.

Python imports a module named `sitecustomize` at start-up, before the program, if one is on `sys.path`.
Put this file in the interpreter's site-packages (or merge its body into the `sitecustomize.py` you already
have there); see README.md beside it. Compared with the other routes:

- `cmdrdata-run python app.py` switches tracking on per command, for that command and its children;
- `CMDRDATA_AUTOPATCH=1` switches it on per environment, through the `.pth` file the package installs;
- this file switches it on for the whole interpreter (a Docker image, a virtualenv dedicated to one app),
  with nothing to remember at launch. `CMDRDATA_DISABLED=1` still turns it off for one process.

Start-up must never fail because of us: any problem is one warning line and the program runs untracked.
"""

import os
import sys

if os.environ.get("CMDRDATA_DISABLED", "").strip().lower() not in ("1", "true", "yes", "on"):
    try:
        import cmdrdata_autopatch

        cmdrdata_autopatch.patch()  # settings come from the CMDRDATA_* environment variables
    except Exception as exc:  # a bad CMDRDATA_* value, or the package missing from this interpreter
        sys.stderr.write(f"cmdrdata-autopatch: warning: usage tracking is OFF in this process: {exc}\n")
