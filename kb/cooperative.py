"""Yield points for cooperative schedulers.

Under gevent (the Dify plugin runtime monkeypatches ``time.sleep``), sleeping lets other greenlets
run, the SDK's heartbeat included. It must be a real (tiny) sleep: ``sleep(0)`` only switches to
greenlets that are already runnable, and timer-driven ones such as the heartbeat never get their
turn (measured: 34 s heartbeat gaps during an ingest that yielded every 2 s). In a plain process a
yield costs about a millisecond, and the engine calls it only between batches of CPU-bound or
native work, so no single stretch blocks for long.
"""

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

YIELD_SECONDS = 0.001


def yield_now() -> None:
    time.sleep(YIELD_SECONDS)


_pool: ThreadPoolExecutor | None = None


def in_background[T](fn: Callable[..., T], /, *args, **kwargs) -> Callable[[], T]:
    """Start ``fn`` (native work that releases the GIL, such as a Chroma query) on a real thread and
    return a function that waits for its result or re-raises its error. Under gevent the wait is
    cooperative (gevent's thread pool), so other greenlets, the heartbeat included, keep running."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        return gevent.get_hub().threadpool.spawn(fn, *args, **kwargs).get
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kb-native")
    return _pool.submit(fn, *args, **kwargs).result


def concurrently[T](fn: Callable[..., T], /, *args, **kwargs) -> Callable[[], T]:
    """As ``in_background``, for network I/O (a Chroma server's client): under gevent a greenlet,
    since gevent's patched sockets already wait cooperatively and cannot be used from another
    thread ("Cannot switch to a different thread"); otherwise a thread of the same pool."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        import gevent

        return gevent.spawn(fn, *args, **kwargs).get
    return in_background(fn, *args, **kwargs)
