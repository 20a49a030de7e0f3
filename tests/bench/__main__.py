"""Print every benchmark figure: `python3 -m tests.bench [name ...]`."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.bench import harness

BENCHES = {
    "inbound_paced": harness.inbound_paced,
    "inbound_burst": harness.inbound_burst,
    "idle": lambda: harness.idle_cost(watched=50, running=0),
    "running": lambda: harness.idle_cost(watched=50, running=5),
    "notification": harness.notification_latency,
    "startup": harness.startup_time,
    "dingtalk": harness.dingtalk_stream,
    "progress": harness.progress_edits,
}


async def main(names: list[str]) -> None:
    for name in names or list(BENCHES):
        figures = await BENCHES[name]()
        print(f"{name}: {json.dumps(figures)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
