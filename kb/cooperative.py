"""Yield points for cooperative schedulers.

Under gevent (the Dify plugin runtime monkeypatches ``time.sleep``), ``time.sleep(0)`` lets other
greenlets run, heartbeats included; in a plain process it costs next to nothing. The engine calls
``yield_now()`` between batches of CPU-bound or native work so no single stretch blocks for long.
"""

import time


def yield_now() -> None:
    time.sleep(0)
