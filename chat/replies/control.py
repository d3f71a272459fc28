"""A running reply's own channel: how any socket, on any process, reaches it.

The channel's name is recorded in the claim (`Conversation.reply_channel`). A socket
sends `reply.stop` (the user pressed stop) or `reply.snapshot_request` (it joined
mid-reply, chat/resume.py); the reply sends `reply.closed` to itself to end the loop.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from channels.layers import get_channel_layer

from chat import events

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0


class Controllable(Protocol):
    conversation_id: str

    def stop(self) -> None: ...

    def snapshot(self) -> dict: ...


async def listen(channel: str, reply: Controllable) -> None:
    """Serve control events until `reply.closed`; a failing layer is retried, never fatal."""
    layer = get_channel_layer()
    while True:
        try:
            event = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("reply control channel failed", exc_info=True)
            await asyncio.sleep(1.0)
            continue
        kind = event.get("type")
        if kind == events.REPLY_CLOSED:
            return
        if kind == events.REPLY_STOP:
            reply.stop()
        elif kind == events.REPLY_SNAPSHOT_REQUEST:
            try:
                await events.send_snapshot(event["reply_to"], reply.conversation_id, reply.snapshot())
            except Exception:
                logger.warning("snapshot not delivered", exc_info=True)


async def close(channel: str, listener: asyncio.Task) -> None:
    """End the control loop with a message, not a cancel.

    With Redis, every process-local channel shares one real channel, and a
    receive cancelled mid-read can lose a message meant for another socket
    of this process (channels_redis pops it, then drops it). So the loop is
    told to stop and returns between two reads; cancel only as a last resort.
    """
    try:
        await events.close_control(channel)
        await asyncio.wait_for(asyncio.shield(listener), CLOSE_TIMEOUT)
    except Exception:
        listener.cancel()
