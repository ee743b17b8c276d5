"""Which class of work the current request is, so shared resources can serve light work first.

The HTTP layer marks long-running requests (syncs) as `BULK` when it starts them; the database pool
hands a freed connection to waiting light work before bulk work, so a herd of syncs cannot make a
`whoami` wait behind all of its transactions.
"""

from contextvars import ContextVar

LIGHT, BULK = "light", "bulk"

current_work_class: ContextVar[str] = ContextVar("current_work_class", default=LIGHT)
