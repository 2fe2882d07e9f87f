"""An unmodified OpenAI program: it never imports cmdrdata_autopatch, so any tracking comes from outside.

Usage: python chat_app.py [--spawn-child]   (or python -m chat_app from this directory)

Prints `APP-RAN pid=<pid> tracked=<bool>` so tests can tell the program ran and whether it was patched;
with --spawn-child it also runs itself as a child process with CMDRDATA_CUSTOMER_ID=child-customer,
the way a program starts helpers or workers.
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _mock


def main() -> int:
    reply = _mock.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "ok"
    ours = sys.modules.get("cmdrdata_autopatch")
    tracked = bool(ours is not None and ours.is_patched())
    print(f"APP-RAN pid={os.getpid()} tracked={tracked}", flush=True)
    if "--spawn-child" in sys.argv:
        env = dict(os.environ, CMDRDATA_CUSTOMER_ID="child-customer")
        return subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
