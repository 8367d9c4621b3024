"""``python -m bench quality|speed|endpoint|server [options]``: the benchmarks (see the README)."""

from __future__ import annotations

import sys

COMMANDS = {
    "quality": "bench.quality",
    "speed": "bench.speed",
    "endpoint": "bench.endpoint_latency",
    "server": "bench.server_speed",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m bench {{{','.join(COMMANDS)}}} [options]  (--help on each)", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
