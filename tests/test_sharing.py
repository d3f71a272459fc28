"""Share links (chat/sharing.py, /s/<token>/): unguessable, stored hashed, read-only,
anonymous, withdrawn at once, and inert whatever the conversation holds."""
from __future__ import annotations

import hashlib
import io
import re
from html.parser import HTMLParser
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.test import Client

from chat import conversations, sharing
from chat.errors import ChatError
from chat.models import Conversation, SharedSnapshot
from tests.conftest import ECHO_MODEL
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]

SHARE_URL = re.compile(r"/s/([A-Za-z0-9_-]+)/")


def owner(make_user):
    user = make_user("alice-owner")
    user.email = "alice.owner@example.com"
    user.save()
    return user


def make_conversation(user, first: str, reply: str, title: str) -> Conversation:
    row, _, message = conversations.create_conversation(user, ECHO_MODEL, first)
    conversations.append_message(row, message.id, "assistant", reply, model=ECHO_MODEL, status="complete")
    conversations.rename(user, row.id, title)
    return row


def token_of(url: str) -> str:
    match = SHARE_URL.fullmatch(url)
    assert match, url
    return match.group(1)


def page(url: str, client: Client | None = None):
    return (client or Client()).get(url)


class Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


# --- The link ----------------------------------------------------------------------------


def test_share_returns_an_unguessable_path_and_stores_only_its_hash(make_user):
    alice = owner(make_user)
    row = make_conversation(alice, "What is a quokka?", "A small **marsupial**.", "Quokka facts")
    shared_row, url = sharing.share(alice, row.id)
    token = token_of(url)
    assert len(token) * 6 >= 128 and len(token) >= 43  # 32 random bytes, base64url
    assert row.id not in token and token not in row.id
    stored = Conversation.objects.get(pk=row.pk)
    assert stored.share_token_hash == hashlib.sha256(token.encode()).hexdigest() == shared_row.share_token_hash
    dump = io.StringIO()
    call_command("dumpdata", "chat", stdout=dump)
    assert token not in dump.getvalue()  # neither the row nor the snapshot holds the raw token
    # Sharing is random, not a function of the id: again gives another token.
    _, again = sharing.share(alice, row.id)
    assert token_of(again) != token
    other = make_conversation(alice, "x", "y", "z")
    assert token_of(sharing.share(alice, other.id)[1]) not in (token, token_of(again))


def test_the_page_opens_without_login_and_shows_only_the_snapshot(make_user):
    alice = owner(make_user)
    row = make_conversation(alice, "What is a quokka?", "A small **marsupial** from *Rottnest*.", "Quokka facts")
    conversations.configure(alice, row.id, system_prompt="SYSTEM-PROMPT-SECRET")
    make_conversation(alice, "other secret plans", "noted, secretly", "Other private chat")
    _, url = sharing.share(alice, row.id)

    response = page(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Quokka facts" in body and "What is a quokka?" in body
    assert "<strong>marsupial</strong>" in body and "<em>Rottnest</em>" in body  # rendered like the app
    for secret in ["alice-owner", "alice.owner@example.com", "alice", "Other private chat", "other secret plans",
                   "SYSTEM-PROMPT-SECRET", row.id, "logout", "Log out", "/settings/"]:
        assert secret not in body, secret
    assert response["X-Robots-Tag"].startswith("noindex")
    robots = [attrs for tag, attrs in Tags(body).tags if tag == "meta" and attrs.get("name") == "robots"]
    assert robots and robots[0]["content"].startswith("noindex")
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"
    assert response.templates[0].name == "chat/shared.html" and "base.html" in [t.name for t in response.templates]


def test_a_logged_in_visitor_sees_nothing_of_their_own_account_either(make_user):
    alice = owner(make_user)
    row = make_conversation(alice, "hello", "hi", "Greetings")
    _, url = sharing.share(alice, row.id)
    visitor = make_user("visitor-bob")
    make_conversation(visitor, "bob's own", "chat", "Bob's private title")
    client = Client()
    client.force_login(visitor)
    body = page(url, client).content.decode()
    assert "Greetings" in body
    for secret in ["visitor-bob", "Bob's private title", "Log out", "alice-owner"]:
        assert secret not in body, secret


def test_the_page_sends_the_apps_security_headers(make_user):
    alice = owner(make_user)
    row = make_conversation(alice, "hello", "hi", "Greetings")
    _, url = sharing.share(alice, row.id)
    reference = Client().get("/")  # any response of the app: the same middleware
    shared = page(url)
    for header in ["X-Frame-Options", "X-Content-Type-Options", "Cross-Origin-Opener-Policy", "Content-Security-Policy",
                   "Strict-Transport-Security", "Permissions-Policy"]:
        if header in reference:
            assert shared.get(header) == reference[header], header
    assert shared["X-Frame-Options"] == reference["X-Frame-Options"]
    assert shared["X-Content-Type-Options"] == "nosniff"


def test_unshare_is_immediate_and_sharing_again_kills_the_old_link(make_user):
    alice = owner(make_user)
    row = make_conversation(alice, "first words", "first answer", "Sharing twice")
    _, first = sharing.share(alice, row.id)
    assert page(first).status_code == 200
    conversations.append_message(row, None, "user", "a later, private message")
    assert "a later, private message" not in page(first).content.decode()  # a snapshot
    _, second = sharing.share(alice, row.id)
    assert first != second
    assert page(first).status_code == 404
    assert "a later, private message" in page(second).content.decode()
    sharing.unshare(alice, row.id)
    assert page(second).status_code == 404
    assert not SharedSnapshot.objects.exists() and Conversation.objects.get(pk=row.pk).share_token_hash is None
    sharing.unshare(alice, row.id)  # unsharing twice is fine


def test_unknown_malformed_and_deleted_links_answer_404(make_user):
    alice = owner(make_user)
    row = make_conversation(alice, "hello", "hi", "Greetings")
    _, url = sharing.share(alice, row.id)
    token = token_of(url)
    for bad in ["/s/" + "A" * 43 + "/", "/s/short/", "/s/" + token[:-1] + "/", "/s/" + token + "x/",
                "/s/" + hashlib.sha256(token.encode()).hexdigest() + "/", f"/s/{row.id}/"]:
        assert Client().get(bad).status_code == 404, bad
    assert Client().post(url).status_code == 405
    conversations.delete(alice, row.id)
    assert page(url).status_code == 404


def test_another_users_conversation_cannot_be_shared_or_unshared(make_user):
    alice, mallory = owner(make_user), make_user("mallory")
    row = make_conversation(alice, "hello", "hi", "Greetings")
    _, url = sharing.share(alice, row.id)
    for action in (sharing.share, sharing.unshare):
        with pytest.raises(ChatError) as caught:
            action(mallory, row.id)
        assert caught.value.code == "not_found"
    assert page(url).status_code == 200


# --- Over the socket ------------------------------------------------------------------------

XSS_REPLY = ('Look: <script>alert("reply")</script> <img src=x onerror=alert(2)> '
             '[click me](javascript:alert(3)) <a href="javascript:alert(4)">js</a> '
             '<iframe src="https://evil.example"></iframe> <svg onload=alert(5)></svg>')
XSS_USER = '<script>alert("user")</script><img src=x onerror=alert(6)>'


async def answer_and_update(socket: ChatSocket, ref: str) -> tuple[dict, dict]:
    """The `conversation.shared` answer and the `conversation.updated` broadcast, in either order."""
    frames = {}
    while len(frames) < 2:
        frame = await socket.next_frame()
        if frame["type"] == "conversation.shared":
            assert frame["ref"] == ref
            frames["shared"] = frame
        elif frame["type"] == "conversation.updated":
            frames["updated"] = frame
    return frames["shared"], frames["updated"]


async def test_share_over_the_socket_with_hostile_content(make_user):
    alice = await create_user("alice")
    socket, other_tab = await ChatSocket.connect(alice), await ChatSocket.connect(alice)
    await socket.send("message.send", conversation=None, content=f"{XSS_USER} #reply={quote(XSS_REPLY)}")
    conversation = (await socket.receive("conversation.created"))["conversation"]["id"]
    _, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and "<script>" in final["message"]["content"]
    await socket.receive("conversation.updated")  # the title

    ref = await socket.send("conversation.share", conversation=conversation)
    shared, updated = await answer_and_update(socket, ref)
    assert updated["conversation"]["id"] == conversation and updated["conversation"]["shared"] is True
    while not (await other_tab.receive("conversation.updated"))["conversation"]["shared"]:
        pass  # the title came first
    assert shared["conversation"] == conversation
    url = shared["url"]
    token_of(url)

    response = await sync_to_async(page)(url)
    assert response.status_code == 200
    body = response.content.decode()
    tags = Tags(body).tags
    for tag, attrs in tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        for name in ("href", "src", "action", "formaction", "xlink:href"):
            assert not attrs.get(name, "").strip().lower().startswith(("javascript:", "data:")), (tag, attrs)
        page_icon = tag == "svg" and "icon" in attrs.get("class", "").split()  # the page's own (static/chat/icons.svg)
        assert tag not in ("iframe", "svg", "object", "embed", "form") or page_icon, (tag, attrs)
        if tag == "script":  # only the app's own static files
            assert attrs.get("src", "").startswith("/static/"), attrs
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(&quot;user&quot;)&lt;/script&gt;" in body  # the user's text, shown as text
    assert "click me" in body

    ref = await socket.send("conversation.unshare", conversation=conversation)
    shared, updated = await answer_and_update(socket, ref)
    assert updated["conversation"]["shared"] is False
    assert shared == {"type": "conversation.shared", "conversation": conversation, "url": None, "ref": ref}
    assert (await sync_to_async(page)(url)).status_code == 404
    await socket.close()
    await other_tab.close()


async def test_share_again_over_the_socket_gives_a_new_link(make_user):
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    conversation = await socket.new_conversation("share me twice")
    ref = await socket.send("conversation.share", conversation=conversation)
    first = (await socket.receive("conversation.shared", ref=ref))["url"]
    ref = await socket.send("conversation.share", conversation=conversation)
    second = (await socket.receive("conversation.shared", ref=ref))["url"]
    assert first != second
    assert (await sync_to_async(page)(first)).status_code == 404
    assert (await sync_to_async(page)(second)).status_code == 200
    hello = (await ChatSocket.connect(alice)).hello
    assert [c["shared"] for c in hello["conversations"]] == [True]
    await socket.close()


async def test_another_users_conversation_is_not_found_over_the_socket(make_user):
    alice, mallory = await create_user("alice"), await create_user("mallory")
    socket = await ChatSocket.connect(alice)
    conversation = await socket.new_conversation("mine alone")
    intruder = await ChatSocket.connect(mallory)
    for kind in ("conversation.share", "conversation.unshare"):
        ref = await intruder.send(kind, conversation=conversation)
        error = await intruder.receive("error", ref=ref)
        assert error["code"] == "not_found"
    ref = await intruder.send("conversation.share", conversation="no-such-conversation")
    assert (await intruder.receive("error", ref=ref))["code"] == "not_found"
    row = await sync_to_async(Conversation.objects.get)(pk=conversation)
    assert row.share_token_hash is None
    assert await socket.nothing_more()  # alice's tabs heard nothing
    await socket.close()
    await intruder.close()


# --- Only finished replies; the model; the link again ----------------------------------------


def test_the_snapshot_keeps_finished_replies_only(make_user):
    alice = owner(make_user)
    row, _, first = conversations.create_conversation(alice, ECHO_MODEL, "question one")
    conversations.append_message(row, first.id, "assistant", "COMPLETE-ANSWER", model=ECHO_MODEL, status="complete")
    _, second = conversations.append_message(row, conversations.load_transcript(row).active_leaf, "user", "question two")
    conversations.append_message(row, second.id, "assistant", "FAILED-HALF", model=ECHO_MODEL, status="failed",
                                 error={"code": "model_failed", "message": "x"})
    _, third = conversations.append_message(row, conversations.load_transcript(row).active_leaf, "user", "question three")
    conversations.append_message(row, third.id, "assistant", "STOPPED-PART", model=ECHO_MODEL, status="stopped")
    _, fourth = conversations.append_message(row, conversations.load_transcript(row).active_leaf, "user", "question four")
    conversations.append_message(row, fourth.id, "assistant", "INTERRUPTED-PART", model=ECHO_MODEL, status="interrupted")
    _, fifth = conversations.append_message(row, conversations.load_transcript(row).active_leaf, "user", "question five")
    _, cut = conversations.append_message(row, fifth.id, "assistant", "CUT-AT-LIMIT", model=ECHO_MODEL, status="cut")
    # That last reply is being continued right now: what the copy would show is unfinished.
    Conversation.objects.filter(pk=row.pk).update(reply_message=cut.id)
    row.refresh_from_db()

    _, url = sharing.share(alice, row.id)
    body = page(url).content.decode()
    assert "COMPLETE-ANSWER" in body and "STOPPED-PART" in body and "(stopped)" in body
    for unfinished in ("FAILED-HALF", "INTERRUPTED-PART", "CUT-AT-LIMIT"):
        assert unfinished not in body, unfinished
    for question in ("question one", "question two", "question three", "question four", "question five"):
        assert question in body  # what was asked stays, even without its reply


def test_the_page_names_the_model_and_invites_to_start_a_chat(make_user):
    alice = owner(make_user)
    row = make_conversation(alice, "What is a quokka?", "A small marsupial.", "Quokka facts")
    _, url = sharing.share(alice, row.id)
    tags = Tags(page(url).content.decode()).tags
    body = page(url).content.decode()
    assert 'data-testid="shared-model">Model: echo<' in body  # the label, not the id
    assert 'data-testid="message-model"' in body
    links = [attrs for tag, attrs in tags if tag == "a" and attrs.get("data-testid", "").startswith("start-own-chat")]
    assert links and all(attrs["href"] == "/" for attrs in links)


def test_the_owner_can_have_the_same_link_again_until_it_is_replaced(make_user, settings):
    alice = owner(make_user)
    row = make_conversation(alice, "hello", "hi", "Greetings")
    _, url = sharing.share(alice, row.id)
    assert sharing.current_link(alice, row.id) == url
    assert page(url).status_code == 200
    _, again = sharing.share(alice, row.id)
    assert sharing.current_link(alice, row.id) == again != url
    with pytest.raises(ChatError) as refused:
        sharing.current_link(make_user("mallory"), row.id)
    assert refused.value.code == "not_found"
    # A new SECRET_KEY: the link still opens, but can no longer be derived, and says so.
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert page(again).status_code == 200
    with pytest.raises(ChatError) as lost:
        sharing.current_link(alice, row.id)
    assert lost.value.code == "not_found" and "new link" in lost.value.message
    sharing.unshare(alice, row.id)
    with pytest.raises(ChatError):
        sharing.current_link(alice, row.id)


async def test_share_link_over_the_socket_answers_the_asking_socket_only(make_user):
    alice = await create_user("alice")
    socket = await ChatSocket.connect(alice)
    other_tab = await ChatSocket.connect(alice)
    conversation = await socket.new_conversation("share me, copy me")
    await other_tab.receive("conversation.updated")  # the title
    ref = await socket.send("conversation.share_link", conversation=conversation)
    assert (await socket.receive("error", ref=ref))["code"] == "not_found"  # not shared yet
    ref = await socket.send("conversation.share", conversation=conversation)
    url = (await socket.receive("conversation.shared", ref=ref))["url"]
    await other_tab.receive("conversation.updated")
    ref = await other_tab.send("conversation.share_link", conversation=conversation)
    again = await other_tab.receive("conversation.shared", ref=ref)
    assert again["url"] == url and again["conversation"] == conversation
    assert await socket.nothing_more()  # the link is never broadcast
    await socket.close()
    await other_tab.close()
