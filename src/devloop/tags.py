"""The environment variables that mark a process as an agent's (inherited by its children).

A module of its own, importing nothing: the collector reads them, every launcher sets them,
and ``devloop run``'s fast path cannot afford to import the collector's models to learn them.
"""

TAG_PROJECT = "DEVLOOP_PROJECT"
TAG_AGENT = "DEVLOOP_AGENT"
TAG_RUN = "DEVLOOP_RUN_ID"
