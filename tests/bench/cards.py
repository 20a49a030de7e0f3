"""Benchmark: DingTalk prompt cards pressed in many conversations at once.

20 private conversations, each bound to a session with an open question shown as a card;
each card is pressed once (paced over a second). Measured per press: press → the answer
POSTed to the backend, and press → the card updated (buttons gone) for everyone.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.harness import GUIDE_POLLING, agent_process, percentile
from tests.conftest import agent_environment
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.dingtalk_cards import TEMPLATE_ID, FakeCard
from tests.fakes.poco import FakePoco


async def dingtalk_cards(conversations: int = 20, gap: float = 1.0) -> dict[str, Any]:
    dingtalk, poco = FakeDingTalk(), FakePoco()
    await dingtalk.start()
    await poco.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            env = agent_environment(
                data_dir,
                dingtalk=dingtalk,
                poco=poco,
                DINGTALK_CARD_TEMPLATE_ID=TEMPLATE_ID,
                **GUIDE_POLLING,
            )
            async with agent_process(env, data_dir):
                cards = await _open_cards(dingtalk, poco, conversations)
                pressed: dict[str, float] = {}
                start = time.monotonic()
                for n, (request_id, card) in enumerate(cards.items()):
                    await asyncio.sleep(
                        max(0.0, start + n * gap / conversations - time.monotonic())
                    )
                    pressed[request_id] = time.monotonic()
                    await dingtalk.cards.press(card, action_id="option_2", user_id=card.space)
                await dingtalk.wait_for(
                    lambda: all(card.options == [] for card in cards.values()), timeout=60
                )
                answered = {
                    call.path.split("/")[-2]: call.at
                    for call in poco.requests
                    if call.method == "POST" and call.path.endswith("/answer")
                }
        to_answer = [(answered[r] - at) * 1000 for r, at in pressed.items()]
        to_card = [(cards[r].updated_at - at) * 1000 for r, at in pressed.items()]
        return {
            "conversations": conversations,
            "answers_posted": len(answered),
            "press_to_answer_p50_ms": round(statistics.median(to_answer), 1),
            "press_to_answer_p99_ms": round(percentile(to_answer, 99), 1),
            "press_to_card_updated_p50_ms": round(statistics.median(to_card), 1),
            "press_to_card_updated_p99_ms": round(percentile(to_card, 99), 1),
        }
    finally:
        await poco.stop()
        await dingtalk.stop()


async def _open_cards(
    dingtalk: FakeDingTalk, poco: FakePoco, conversations: int
) -> dict[str, FakeCard]:
    """Bind each conversation (its own user) to a session that asks: request id -> card."""
    users = [f"staff-bench-{i}" for i in range(conversations)]
    sessions = {user: poco.create_session(prompt=f"bench {user}") for user in users}
    for user in users:
        await dingtalk.push_message(
            f"cid-bench-{user}", f"/connect {sessions[user]}", sender_staff_id=user
        )
    await dingtalk.wait_for(lambda: len(dingtalk.sent) >= conversations, timeout=30)
    requests = {}
    for user in users:
        poco.start_run(sessions[user])
        requests[user] = poco.add_question(sessions[user], "Which?", ["A", "B"], expires_in=600)
    await dingtalk.wait_for(
        lambda: all(len(dingtalk.cards.to(user)) == 1 for user in users), timeout=30
    )
    return {requests[user]: dingtalk.cards.to(user)[0] for user in users}
