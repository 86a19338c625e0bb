"""Process discovery, attribution and sampling.

:class:`Collector` ticks; each :class:`Tick` holds rows in the column order of
:mod:`devloop.store.schema` for a caller to hand to the store. Sources: ``procfs`` (Linux, reads
``/proc`` with kept-open files) and ``psutil`` (portable). Attribution: environment tags
DEVLOOP_PROJECT / DEVLOOP_AGENT, inheritance from the parent, or a project :class:`Rule`
(:func:`rules_for` makes a workspace's).
"""

from devloop.collector.attribution import (
    OTHER_PROJECT,
    Attribution,
    Attributor,
    command_matches,
    rules_for,
)
from devloop.collector.collector import Collector, make_source
from devloop.collector.model import (
    Identity,
    ProcessRow,
    Reading,
    Rule,
    SampleRow,
    Source,
    SystemReading,
    SystemRow,
    Tick,
)

__all__ = [
    "OTHER_PROJECT",
    "Attribution",
    "Attributor",
    "Collector",
    "Identity",
    "ProcessRow",
    "Reading",
    "Rule",
    "SampleRow",
    "Source",
    "SystemReading",
    "SystemRow",
    "Tick",
    "command_matches",
    "make_source",
    "rules_for",
]
