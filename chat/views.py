"""HTTP pages: the chat page (server-rendered history), exports, shared pages and /healthz (sign-up: chat/accounts.py)."""
from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from chat import conversations, exports, preferences
from chat.backends import available_models
from chat.errors import ChatError
from chat.presenters import branch_dicts, conversation_dict
from chat.services import limits

# The page renders the newest conversations at once; the socket's `hello`, which
# follows within milliseconds, brings the whole list. A user with 10,000
# conversations would otherwise wait for a page of several megabytes.
SIDEBAR_FIRST_PAGE = 100


@login_required
def index(request: HttpRequest) -> HttpResponse:
    latest = conversations.get_latest_conversation(request.user)
    if latest is None:
        return redirect("chat:new")
    return redirect("chat:conversation", conversation_id=latest.pk)


@login_required
def new_chat(request: HttpRequest) -> HttpResponse:
    return _chat_page(request, None)


@login_required
def conversation_page(request: HttpRequest, conversation_id: str) -> HttpResponse:
    return _chat_page(request, conversation_id)


def _chat_page(request: HttpRequest, conversation_id: str | None) -> HttpResponse:
    conversation, messages, status = None, [], 200
    if conversation_id is not None:
        try:
            row, transcript = conversations.get_conversation(request.user, conversation_id)
        except ChatError as error:
            if error.code == "not_found":
                raise Http404("No such conversation") from None
            # Storage down: the page still opens; the socket will say what is wrong.
            row, transcript, status = conversations.get_row(request.user, conversation_id), None, 503
        conversation = conversation_dict(row)
        messages = branch_dicts(transcript) if transcript else []
    models = [model.as_dict() for model in available_models()]
    default_model = preferences.default_model_for(request.user)  # what a new chat starts on
    selected = conversation["model"] if conversation else default_model
    boot = {
        "conversation": conversation["id"] if conversation else None,
        "wsPath": "/ws/chat/",
        "limits": limits(),
        "selectedModel": default_model,
        "newChatUrl": reverse("chat:new"),
        "conversationUrlTemplate": reverse("chat:conversation", args=["__id__"]),
    }
    context = {
        "conversations": [conversation_dict(row) for row in conversations.list_conversations(request.user, SIDEBAR_FIRST_PAGE)],
        "conversation": conversation,
        "messages": messages,
        "models": models,
        "selected_model": selected,
        "boot": boot,
    }
    return render(request, "chat/chat.html", context, status=status)


@login_required
def export_markdown(request: HttpRequest, conversation_id: str) -> HttpResponse:
    transcript = _owned_transcript(request, conversation_id)
    if transcript is None:
        return _storage_down()
    response = HttpResponse(exports.to_markdown(transcript), content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{exports.filename(transcript, "md")}"'
    return response


@login_required
def export_json(request: HttpRequest, conversation_id: str) -> HttpResponse:
    transcript = _owned_transcript(request, conversation_id)
    if transcript is None:
        return _storage_down()
    body = json.dumps(exports.to_json(transcript), ensure_ascii=False, indent=2)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{exports.filename(transcript, "json")}"'
    return response


def _owned_transcript(request: HttpRequest, conversation_id: str):
    """The user's transcript; 404 for anyone else's; None while storage is down."""
    try:
        return conversations.get_conversation(request.user, conversation_id)[1]
    except ChatError as error:
        if error.code == "not_found":
            raise Http404("No such conversation") from None
        return None


def _storage_down() -> HttpResponse:
    return HttpResponse("Storage is unavailable; try again shortly.", status=503, content_type="text/plain")


@require_http_methods(["GET", "HEAD"])
def shared_conversation(request: HttpRequest, token: str) -> HttpResponse:
    """A shared snapshot (chat/sharing.py): no login, nothing of the owner but the snapshot."""
    from chat import sharing

    snapshot = sharing.find(token)
    if snapshot is None:
        raise Http404("No such shared conversation")
    messages = sharing.page_messages(snapshot)
    context = {"title": snapshot.title or "Untitled conversation", "messages": messages,
               "model": sharing.shared_model(messages)}
    response = render(request, "chat/shared.html", context)
    response["X-Robots-Tag"] = "noindex, nofollow"
    # The URL is the secret: never keep the page where an unshare cannot reach it, and
    # never send the URL on to a site that a link in the conversation leads to.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_http_methods(["GET", "HEAD"])
async def healthz(request: HttpRequest) -> HttpResponse:
    """The state of the database, channel layer, storage and models (chat/health.py), for a
    load balancer or uptime monitor: 200 when all are up, else 503; JSON either way, the
    checks themselves only for staff or HEALTHZ_TOKEN."""
    from chat import health

    healthy, body = await health.report()
    if not await health.sees_details(request):
        body = {"status": body["status"]}  # which backends and models run is not the public's business
    response = JsonResponse(body, status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    return response
