"""``python -m aqueue.runtime.process_main``: a task process (see :mod:`.processes`).

A module of its own, which nothing in the package imports, so running it as
``__main__`` never finds it imported already under its own name.
"""

from __future__ import annotations

from .processes import serve

if __name__ == "__main__":
    serve()
