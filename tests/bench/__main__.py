"""Print every benchmark figure: `python3 -m tests.bench [name ...]`."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.bench import cards, file_relay, harness

BENCHES = {
    "inbound_paced": harness.inbound_paced,
    "inbound_burst": harness.inbound_burst,
    "idle": lambda: harness.idle_cost(watched=50, running=0),
    "idle_new": lambda: harness.idle_cost(watched=50, running=0, generation=harness.GEN_NEW),
    "idle_history": lambda: harness.idle_cost(
        watched=0, history=3000, queued_forever=10, old_bound=True
    ),
    "idle_history_new": lambda: harness.idle_cost(
        watched=0, history=3000, queued_forever=10, old_bound=True, generation=harness.GEN_NEW
    ),
    "running": lambda: harness.idle_cost(watched=50, running=5),
    "outside": harness.outside_latency,
    "outside_new": lambda: harness.outside_latency(generation=harness.GEN_NEW),
    "long_session": harness.long_session_cycle,
    "long_session_new": lambda: harness.long_session_cycle(generation=harness.GEN_NEW),
    "notification": harness.notification_latency,
    "startup": harness.startup_time,
    "dingtalk": harness.dingtalk_stream,
    "dingtalk_cards": cards.dingtalk_cards,
    "file_relay": file_relay.file_relay,
    "progress": harness.progress_edits,
}


async def main(names: list[str]) -> None:
    for name in names or list(BENCHES):
        figures = await BENCHES[name]()
        print(f"{name}: {json.dumps(figures)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
