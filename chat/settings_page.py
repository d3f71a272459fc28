"""The settings page (`/settings/`) and its forms; each form posts to its own URL, and an
invalid post renders the whole page again with that form's errors.

- Today's use of hosted models (shown only when there is a limit).
- Custom instructions and default model of new conversations (chat/preferences.py).
- Password change (the throttled view of chat/accounts.py posts from here).
- API tokens for non-browser clients (name, hint, created, last used): creating one
  (the raw token is shown once, in the answer to the POST, and never stored), revoking one.
- Export of every conversation as one zip (chat/account_export.py).
- Deleting the account and its data (chat/account_deletion.py), behind the password
  (throttled with the password change's counter) and a confirmation.

The views are thin: what a change means lives in the modules named above.
"""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from chat import account_deletion, account_export, preferences, quotas
from chat.accounts import ThrottledPasswordChangeForm, password_throttle, wait_in_words
from chat.backends import available_models, default_model_id
from chat.blocking import run_blocking
from chat.errors import ChatError
from chat.models import ApiToken, Conversation
from chat.store import StorageUnavailable

MAX_TOKENS_PER_USER = 20


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, strip=True,
                           widget=forms.TextInput(attrs={"placeholder": "e.g. laptop terminal", "autocomplete": "off"}))


class PreferencesForm(forms.Form):
    """The fields as typed; what they may hold is checked by `preferences.save`."""

    custom_instructions = forms.CharField(required=False, strip=True, widget=forms.Textarea)
    default_model = forms.CharField(required=False, max_length=200)


class DeleteAccountForm(forms.Form):
    password = forms.CharField(strip=False, widget=forms.PasswordInput, error_messages={
        "required": "Type your password: it shows that the account is yours. Nothing was deleted."})
    confirm = forms.BooleanField(error_messages={
        "required": "Tick the box to confirm that you want your account and conversations deleted."})

    wait: int | None = None  # seconds the password throttle asks to wait, or None

    def __init__(self, user, *args, **kwargs) -> None:
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if self.wait is not None:
            raise ValidationError("Too many wrong passwords. Wait %(wait)s and try again. Nothing was deleted.",
                                  code="throttled", params={"wait": wait_in_words(self.wait)})
        if not self.user.check_password(password):
            raise ValidationError("That is not your password. Nothing was deleted.", code="password_incorrect")
        return password


def _focus_first_error(form: forms.Form) -> None:
    """Where to type next after a refusal (fields drawn by chat/_form_field.html, which
    writes out the widget's attributes)."""
    for name in form.errors:
        if name in form.fields:
            form.fields[name].widget.attrs["autofocus"] = True
            return


def _section_url(section: str) -> str:
    return f"{reverse('chat:settings')}#{section}"


def render_settings(request: HttpRequest, *, form: TokenForm | None = None, new_token: ApiToken | None = None,
                    raw_token: str | None = None, password_form: forms.Form | None = None,
                    preferences_form: PreferencesForm | None = None, delete_form: DeleteAccountForm | None = None,
                    status: int = 200) -> HttpResponse:
    """The whole page; the form that was just posted (if any) is passed in with its errors."""
    user = request.user
    if password_form is not None:
        _focus_first_error(password_form)
    saved = preferences.get(user)
    models = available_models()
    default_label = next((m.label for m in models if m.id == default_model_id()), default_model_id())
    context = {
        "tokens": ApiToken.objects.filter(user=user).order_by("-created_at", "-pk"),
        "form": form or TokenForm(),
        "new_token": new_token,
        "raw_token": raw_token,
        "usage": quotas.usage(user),
        "max_tokens": MAX_TOKENS_PER_USER,
        "password_form": password_form or ThrottledPasswordChangeForm(user),
        "preferences_form": preferences_form or PreferencesForm(initial={
            "custom_instructions": saved.custom_instructions, "default_model": saved.default_model}),
        "models": [model.as_dict() for model in models],
        "site_default_label": default_label,
        "max_instructions_chars": settings.CHAT_MAX_SYSTEM_PROMPT_CHARS,
        "conversation_count": Conversation.objects.filter(owner=user).count(),
        "delete_form": delete_form or DeleteAccountForm(user),
    }
    response = render(request, "chat/settings.html", context, status=status)
    if raw_token:
        response["Cache-Control"] = "no-store"  # the raw token must not outlive this page
    return response


@login_required
@require_GET
def settings_page(request: HttpRequest) -> HttpResponse:
    return render_settings(request)


# --- Preferences ----------------------------------------------------------------------------


@login_required
@require_POST
def save_preferences(request: HttpRequest) -> HttpResponse:
    form = PreferencesForm(request.POST)
    if form.is_valid():
        try:
            preferences.save(request.user, **form.cleaned_data)
        except ValidationError as refusal:
            form.add_error(None, refusal)  # a dict of field → message: each shown at its field
    if not form.is_valid():
        return render_settings(request, preferences_form=form, status=400)
    messages.success(request, "Saved. New conversations start from these; existing ones keep their own settings.",
                     extra_tags="preferences")
    return redirect(_section_url("preferences-heading"))


# --- API tokens -----------------------------------------------------------------------------


@login_required
@require_POST
def create_token(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if form.is_valid() and ApiToken.objects.filter(user=request.user).count() >= MAX_TOKENS_PER_USER:
        form.add_error(None, f"You can have at most {MAX_TOKENS_PER_USER} tokens. Revoke one first.")
    if not form.is_valid():
        return render_settings(request, form=form, status=400)
    token, raw = ApiToken.issue(request.user, form.cleaned_data["name"])
    return render_settings(request, new_token=token, raw_token=raw, status=201)


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    token = ApiToken.objects.filter(user=request.user, pk=token_id).first()
    if token is None:
        raise Http404("No such token")  # someone else's is indistinguishable from none
    token.delete()
    messages.success(request, f"Token “{token.name or token.key_hint + '…'}” revoked: clients using it are refused from now on.")
    return redirect("chat:settings")


# --- Export and deletion --------------------------------------------------------------------


@login_required
@require_GET
async def export_all(request: HttpRequest) -> HttpResponse:
    """Every conversation in one zip, streamed (chat/account_export.py)."""
    user = await request.auser()
    try:
        rows = await run_blocking(account_export.conversations_to_export, user)
    except StorageUnavailable:
        return HttpResponse("Your conversations cannot be read right now (storage is unavailable). "
                            "Nothing is lost; try again shortly.", status=503, content_type="text/plain")
    response = StreamingHttpResponse(account_export.stream(rows), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{account_export.filename()}"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def delete_account(request: HttpRequest) -> HttpResponse:
    throttle = password_throttle(request.user)
    form = DeleteAccountForm(request.user, request.POST)
    form.wait = throttle.wait()
    if not form.is_valid():
        if form.has_error("password", "password_incorrect"):
            throttle.hit()
        return render_settings(request, delete_form=form, status=429 if form.has_error("password", "throttled") else 400)
    try:
        account_deletion.delete_account(request.user)
    except ChatError:
        form.add_error(None, "Your account was not deleted: your conversations cannot be reached right now "
                             "(storage is unavailable). Try again in a moment.")
        return render_settings(request, delete_form=form, status=503)
    # The user is gone, so there is no one to log out: end the session (logout's signal would name no one).
    request.session.flush()
    request.user = AnonymousUser()
    return render(request, "registration/account_deleted.html", {"signup_open": settings.SIGNUP_OPEN})
