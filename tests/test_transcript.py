"""The message tree: branches from edits and regenerations, and its stored form."""
from __future__ import annotations

import dataclasses
import json

import pytest

from chat.transcript import FORMAT_VERSION, Transcript


def conversation() -> Transcript:
    """u1 → a1 → u2 → a2, a plain linear chat."""
    t = Transcript.new("c1", 7, "m", system_prompt="Be brief.", title="T")
    u1 = t.add_message(None, "user", "hi")
    a1 = t.add_message(u1.id, "assistant", "hello", model="m", status="complete")
    u2 = t.add_message(a1.id, "user", "how are you?")
    t.add_message(u2.id, "assistant", "fine", model="m", status="complete")
    return t


def contents(messages) -> list[str]:
    return [m.content for m in messages]


def test_add_makes_active_leaf_and_bumps_updated_at():
    t = Transcript.new("c1", 7, "m")
    assert t.active_branch() == [] and t.active_leaf is None
    before = t.updated_at
    u = t.add_message(None, "user", "hi")
    assert t.active_leaf == u.id and u.parent is None and u.role == "user"
    assert t.updated_at == u.created_at >= before
    assert u.created_at.endswith("+00:00") and "." in u.created_at  # UTC, microseconds
    assert len(u.id) >= 16 and u.id.isalnum()


def test_add_rejects_unknown_parent_role_and_duplicate_id():
    t = conversation()
    with pytest.raises(KeyError):
        t.add_message("nope", "user", "x")
    with pytest.raises(ValueError):
        t.add_message(None, "system", "x")
    first = next(iter(t.messages))
    with pytest.raises(ValueError):
        t.add_message(None, "user", "x", message_id=first)
    assert len(t.messages) == 4


def test_active_branch_and_children():
    t = conversation()
    assert contents(t.active_branch()) == ["hi", "hello", "how are you?", "fine"]
    u1 = t.active_branch()[0]
    assert contents(t.children(None)) == ["hi"]
    assert contents(t.children(u1.id)) == ["hello"]
    assert t.siblings(u1.id) == [u1.id]
    assert t.last_user_message().content == "how are you?"
    assert t.active_branch()[-1].content == "fine"  # the last reply


def test_regenerate_makes_sibling_replies():
    t = conversation()
    u2 = t.last_user_message()
    old = t.active_branch()[-1]  # the last reply
    new = t.add_message(u2.id, "assistant", "great", model="m", status="complete")
    assert t.siblings(new.id) == [old.id, new.id] == t.siblings(old.id)
    assert contents(t.active_branch())[-1] == "great"
    t.switch_branch(old.id)
    assert contents(t.active_branch())[-1] == "fine"


def test_edit_of_first_message_makes_sibling_roots():
    t = conversation()
    first = t.active_branch()[0]
    edited = t.add_message(None, "user", "hello there")
    t.add_message(edited.id, "assistant", "hi!", model="m", status="complete")
    assert t.siblings(edited.id) == [first.id, edited.id]
    assert contents(t.children(None)) == ["hi", "hello there"]
    assert contents(t.active_branch()) == ["hello there", "hi!"]
    # Switching back to the old root restores the whole old conversation.
    assert t.switch_branch(first.id) == list(t.messages)[3]
    assert contents(t.active_branch()) == ["hi", "hello", "how are you?", "fine"]


def test_switch_branch_follows_newest_child_at_each_step():
    t = conversation()
    u1, a1, u2, a2 = t.active_branch()
    a2b = t.add_message(u2.id, "assistant", "fine, thanks")  # regenerate: newest reply to u2
    u2b = t.add_message(a1.id, "user", "what's up?")  # edit of u2: newest child of a1
    a3 = t.add_message(u2b.id, "assistant", "not much")
    t.switch_branch(a2.id)  # an explicit pick of an old leaf
    assert t.active_leaf == a2.id
    assert t.switch_branch(u1.id) == a3.id  # u1 → a1 → newest child u2b → a3
    t.switch_branch(u2.id)
    assert t.active_leaf == a2b.id  # the newest reply under u2, not the first one
    with pytest.raises(KeyError):
        t.switch_branch("missing")
    assert t.active_leaf == a2b.id


def test_model_messages_system_prompt_and_active_branch_only():
    t = conversation()
    u2 = t.last_user_message()
    failed = t.add_message(u2.id, "assistant", "", status="failed", error={"code": "model_failed", "message": "x"})
    assert t.model_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]
    t.switch_branch(t.siblings(failed.id)[0])  # back to the branch with the "fine" reply
    t.add_message(t.active_leaf, "user", "bye")
    assert [m["content"] for m in t.model_messages()] == ["Be brief.", "hi", "hello", "how are you?", "fine", "bye"]
    t.system_prompt = ""
    assert t.model_messages()[0] == {"role": "user", "content": "hi"}


def test_model_messages_keeps_partial_reply_text():
    t = Transcript.new("c", 1, "m")
    u = t.add_message(None, "user", "q")
    t.add_message(u.id, "assistant", "half an ans", status="stopped")
    assert t.model_messages() == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "half an ans"}]


def test_round_trip_through_json():
    t = conversation()
    u2 = t.last_user_message()
    error = {"code": "model_failed", "message": "cut"}
    bad = t.add_message(u2.id, "assistant", "ünïcode ✓", status="failed", error=error)
    t.switch_branch(t.siblings(bad.id)[0])
    assert t.active_leaf != bad.id
    data = json.loads(json.dumps(t.to_dict()))
    assert data["version"] == FORMAT_VERSION == 1
    back = Transcript.from_dict(data)
    assert back == t
    assert list(back.messages) == list(t.messages)  # creation order survives
    assert back.active_leaf == t.active_leaf
    fields = ("id", "title", "model", "system_prompt", "created_at", "updated_at")
    assert back.metadata() == {k: data[k] for k in fields}
    assert "messages" not in t.metadata()


def test_unknown_version_rejected():
    data = conversation().to_dict()
    for version in (2, None, "1"):
        with pytest.raises(ValueError, match="version"):
            Transcript.from_dict({**data, "version": version})


def test_broken_tree_rejected():
    data = conversation().to_dict()
    with pytest.raises(ValueError):
        Transcript.from_dict({**data, "active_leaf": "nope"})
    with pytest.raises(ValueError):
        Transcript.from_dict({**data, "messages": list(reversed(data["messages"]))})
    with pytest.raises(ValueError):
        Transcript.from_dict({k: v for k, v in data.items() if k != "title"})


def test_stored_message_has_every_field_and_shares_no_error_dict():
    """Message.to_dict is written by hand (dataclasses.asdict was 30× slower): a field
    added to Message must not be left out of what is stored."""
    t = Transcript.new("c1", 7, "m")
    reply = t.add_message(t.add_message(None, "user", "hi").id, "assistant", "cut", model="m", status="failed")
    reply.error = {"code": "model_failed", "message": "boom"}
    stored = reply.to_dict()
    assert set(stored) == set(dataclasses.asdict(reply))
    assert stored == dataclasses.asdict(reply)
    stored["error"]["code"] = "changed"
    assert reply.error["code"] == "model_failed"
