"""Process facts that need nothing but ``os`` (``devloop run``'s fast path uses them too)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process holds ``pid`` (someone else's counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
