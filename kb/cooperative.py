"""Yield points for cooperative schedulers.

Under gevent (the Dify plugin runtime monkeypatches ``time.sleep``), sleeping lets other greenlets
run, the SDK's heartbeat included. It must be a real (tiny) sleep: ``sleep(0)`` only switches to
greenlets that are already runnable, and timer-driven ones such as the heartbeat never get their
turn (measured: 34 s heartbeat gaps during an ingest that yielded every 2 s). In a plain process a
yield costs about a millisecond, and the engine calls it only between batches of CPU-bound or
native work, so no single stretch blocks for long.
"""

import time

YIELD_SECONDS = 0.001


def yield_now() -> None:
    time.sleep(YIELD_SECONDS)
