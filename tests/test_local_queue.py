"""The fair line in front of the local model (issue 15, issue 16 item 7): the order of
turns, the positions told to waiting generations, the per-user cap, and the local
backend driving it with a scripted Llama (every wait is on an event, never a sleep)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from chat.backends import LocalBackend, ModelError
from chat.backends.local_queue import FairQueue


def names(queue: FairQueue, tickets: dict) -> list[str]:
    by_ticket = {ticket: name for name, ticket in tickets.items()}
    return [by_ticket[t] for t in queue.order()]


def test_another_users_first_reply_waits_for_at_most_the_one_in_progress():
    line = FairQueue()
    mine = [line.join("ann") for _ in range(12)]
    assert line.running is mine[0]
    other = line.join("bob")
    assert line.order()[0] is other
    assert line.ahead_of(other) == 1  # only ann's reply in progress


def test_replies_take_turns_across_users():
    line = FairQueue()
    tickets = {}
    for name in ("a1", "a2", "a3", "b1", "b2", "b3", "c1"):
        tickets[name] = line.join(name[0])
    assert line.running is tickets["a1"]
    assert names(line, tickets) == ["b1", "c1", "a2", "b2", "a3", "b3"]

    line.leave(tickets["a1"])
    assert line.running is tickets["b1"]
    assert names(line, tickets) == ["c1", "a2", "b2", "a3", "b3"]


def test_a_user_coming_back_does_not_jump_ahead_of_those_waiting_longer():
    line = FairQueue()
    first = line.join("ann")
    bob = line.join("bob")
    cid = line.join("cid")
    line.leave(first)  # bob runs; ann was served most recently
    again = line.join("ann")
    assert line.order() == [cid, again]
    assert line.running is bob


def test_titles_wait_behind_every_reply():
    line = FairQueue()
    running = line.join("ann")
    title = line.join("ann", "title")
    reply = line.join("bob")
    later_reply = line.join("ann")
    assert line.order() == [reply, later_reply, title]
    line.leave(running)
    line.leave(reply)
    line.leave(later_reply)
    assert line.running is title


def test_waiting_generations_are_told_their_position_as_it_changes():
    line = FairQueue()
    told: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    a = line.join("ann", on_wait=told["a"].append)
    b = line.join("bob", on_wait=told["b"].append)
    c = line.join("cid", on_wait=told["c"].append)
    assert told == {"a": [0], "b": [1], "c": [2]}

    line.leave(a)
    assert told == {"a": [0], "b": [1, 0], "c": [2, 1]}
    line.cancel(c)  # the user pressed Stop while waiting
    line.leave(b)
    assert told == {"a": [0], "b": [1, 0], "c": [2, 1]} and len(line) == 0


def test_a_new_reply_of_a_less_served_user_moves_others_back_and_says_so():
    line = FairQueue()
    told: list[int] = []
    line.join("ann")
    line.join("ann", on_wait=told.append)
    line.join("bob")
    assert told == [1, 2]  # bob had not been served yet: he goes first


def test_too_many_replies_of_one_user_are_refused_as_busy():
    line = FairQueue()
    tickets = [line.join("ann", max_replies=3) for _ in range(3)]
    with pytest.raises(ModelError) as caught:
        line.join("ann", max_replies=3)
    assert caught.value.code == "busy" and "3 replies waiting" in caught.value.message
    assert len(line) == 3  # the refused one never entered the line

    line.join("ann", "title", max_replies=3)  # titles are not counted
    line.join("bob", max_replies=3)  # nor are other users' replies
    line.leave(tickets[0])
    line.join("ann", max_replies=3)  # room again once one has finished


def test_a_worker_blocks_until_its_turn_and_a_cancelled_one_gives_up():
    line = FairQueue()
    first = line.join("ann")
    second = line.join("bob")
    third = line.join("cid")
    results: dict[str, bool] = {}

    def wait(name, ticket):
        results[name] = line.wait_turn(ticket)

    workers = [threading.Thread(target=wait, args=(n, t)) for n, t in (("second", second), ("third", third))]
    for worker in workers:
        worker.start()
    line.cancel(third)
    workers[1].join(5)
    assert results == {"third": False}
    line.leave(first)
    workers[0].join(5)
    assert results == {"third": False, "second": True}
    assert line.running is second


# --- The local backend with a scripted model --------------------------------------------
class ScriptedLlama:
    """Stands in for llama_cpp.Llama: each generation writes `tokens` pieces, and holds
    before its first one until the test opens its gate (keyed by the prompt)."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.calls: list[dict] = []

    def gate(self, prompt: str) -> threading.Event:
        return self.gates.setdefault(prompt, threading.Event())

    def create_chat_completion(self, messages, *, stream, max_tokens, **sampling):
        prompt = messages[-1]["content"]
        self.calls.append({"prompt": prompt, "max_tokens": max_tokens, **sampling})
        tokens = int(prompt.split("tokens=")[1]) if "tokens=" in prompt else 3

        def chunks():
            if not self.gate(prompt).wait(10):
                raise AssertionError(f"the gate of {prompt!r} was never opened")
            for i in range(min(tokens, max_tokens)):
                yield {"choices": [{"delta": {"content": f" t{i}"}, "finish_reason": None}]}
            reason = "length" if tokens > max_tokens else "stop"
            yield {"choices": [{"delta": {}, "finish_reason": reason}]}

        return chunks()


@pytest.fixture
def scripted(settings):
    settings.LOCAL_MODEL_MAX_QUEUED_REPLIES = 3
    backend = LocalBackend()
    backend._llm = ScriptedLlama()  # load() returns it: no model file is read
    return backend


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class Positions:
    """The `ahead` values a stream was told, with a way to wait for a given one."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._changed = asyncio.Event()

    def __call__(self, ahead: int) -> None:
        self.seen.append(ahead)
        self._changed.set()

    async def reach(self, ahead: int) -> None:
        async with asyncio.timeout(10):
            while not self.seen or self.seen[-1] != ahead:
                self._changed.clear()
                await self._changed.wait()


async def test_a_waiting_reply_hears_its_position_then_streams(scripted):
    llm = scripted._llm
    ann = scripted.stream("local", ask("ann tokens=5"), max_tokens=16, user=1)
    bob_positions = Positions()
    bob = scripted.stream("local", ask("bob"), max_tokens=16, user=2, on_wait=bob_positions)
    ann_first = asyncio.ensure_future(anext(ann))
    bob_first = asyncio.ensure_future(anext(bob))

    await bob_positions.reach(1)  # ann's reply is in progress
    assert not bob_first.done()
    llm.gate("ann tokens=5").set()
    assert await ann_first == " t0"
    assert [p async for p in ann] == [" t1", " t2", " t3", " t4"]

    llm.gate("bob").set()
    assert await bob_first == " t0"
    assert bob_positions.seen == [1, 0]
    assert [p async for p in bob] == [" t1", " t2"]
    assert (ann.finish_reason, bob.finish_reason) == ("stop", "stop")


async def test_a_reply_cut_by_the_token_limit_says_length(scripted):
    scripted._llm.gate("long tokens=50").set()
    stream = scripted.stream("local", ask("long tokens=50"), max_tokens=4)
    assert [p async for p in stream] == [" t0", " t1", " t2", " t3"]
    assert stream.finish_reason == "length"


async def test_a_stopped_reply_has_no_finish_reason_and_frees_the_model(scripted):
    stream = scripted.stream("local", ask("story tokens=50"), max_tokens=64)
    scripted._llm.gate("story tokens=50").set()
    assert await anext(stream) == " t0"
    await stream.aclose()
    assert stream.finish_reason is None
    after = scripted.stream("local", ask("next"), max_tokens=8)
    scripted._llm.gate("next").set()
    assert [p async for p in after] == [" t0", " t1", " t2"]  # the model was given back


async def test_one_reply_over_the_cap_fails_busy_before_anything_runs(scripted):
    places = [Positions() for _ in range(3)]
    held = [scripted.stream("local", ask(f"mine {i}"), max_tokens=8, user=7, on_wait=places[i]) for i in range(3)]
    firsts = [asyncio.ensure_future(anext(s)) for s in held]
    for i, place in enumerate(places):
        await place.reach(i)  # all three are in line
    positions = Positions()
    fourth = scripted.stream("local", ask("one more"), max_tokens=8, user=7, on_wait=positions)
    with pytest.raises(ModelError) as caught:
        await anext(fourth)
    assert caught.value.code == "busy"
    assert positions.seen == []
    with pytest.raises(ModelError):
        scripted.check_room(7)
    scripted.check_room(8)  # another user has room

    for i in range(3):
        scripted._llm.gate(f"mine {i}").set()
    assert [await f for f in firsts] == [" t0"] * 3
    for stream in held:
        await stream.aclose()
    assert [call["prompt"] for call in scripted._llm.calls] == ["mine 0", "mine 1", "mine 2"]


async def test_a_title_waits_for_the_reply_that_came_after_it(scripted):
    llm = scripted._llm
    running = scripted.stream("local", ask("first"), max_tokens=8, user=1)
    first = asyncio.ensure_future(anext(running))
    title_positions, reply_positions = Positions(), Positions()
    title = scripted.stream("local", ask("title"), max_tokens=8, user=1, purpose="title", on_wait=title_positions)
    title_first = asyncio.ensure_future(anext(title))
    await title_positions.reach(1)
    reply = scripted.stream("local", ask("reply"), max_tokens=8, user=1, on_wait=reply_positions)
    reply_first = asyncio.ensure_future(anext(reply))
    await reply_positions.reach(1)
    await title_positions.reach(2)  # pushed back behind the new reply

    for prompt in ("first", "title", "reply"):
        llm.gate(prompt).set()
    await first
    await running.aclose()
    await reply_first
    await reply.aclose()
    await title_first
    await title.aclose()
    assert [call["prompt"] for call in llm.calls] == ["first", "reply", "title"]


async def test_sampling_follows_the_model_card_with_a_repetition_penalty(scripted):
    scripted._llm.gate("hi").set()
    await anext(scripted.stream("local", ask("hi"), max_tokens=8))
    (call,) = scripted._llm.calls
    assert call["temperature"] == 0.2 and call["top_p"] == 0.9
    assert call["repeat_penalty"] > 1.0
