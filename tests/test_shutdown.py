"""In-process: SIGTERM's work (chat/replies/shutdown.py) and the heartbeat's checkpoint (issue 15).
The same behaviour with real processes and signals: tests/test_durability.py."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation
from chat.replies import shutdown
from chat.store import get_store
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


async def test_shutdown_stores_running_replies_as_interrupted_with_their_text_and_tells_the_tab():
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="long #tokens=2000 #delay=0.01")
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    await socket.receive("reply.delta", seq=3)
    assert await shutdown.interrupt_replies(4.0) == 0
    told = await socket.receive("reply.completed")
    assert told["stopped"] is False and told["message"]["status"] == "interrupted"
    assert told["message"]["content"].startswith("w0 w1 w2")
    stored = get_store().load(user.pk, conversation_id).messages[told["message"]["id"]]
    assert (stored.status, stored.content) == ("interrupted", told["message"]["content"])
    row = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
    assert row.reply_message is None and row.reply_text == "", "the claim and its checkpoint are released"
    await socket.close()


async def test_the_heartbeat_checkpoints_the_text_so_far_with_its_seq(settings):
    settings.CHAT_REPLY_CHECKPOINT_SECONDS = 0.05
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="long #tokens=400 #delay=0.01")
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    text, seq = "", 0
    while True:  # every delta seen; the checkpoint is a prefix of them, at a delta boundary
        delta = await socket.receive("reply.delta")
        text, seq = text + delta["delta"], delta["seq"] + 1
        row = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
        if row.reply_seq >= 5:
            break
    assert row.reply_text and text.startswith(row.reply_text) and row.reply_seq <= seq
    await socket.send("generation.stop", conversation=conversation_id)
    await socket.receive("reply.completed")
    await socket.close()
