"""Accounts: a login that slows down password guessing, and the settings page.

Login throttle: after `LOGIN_FAILURE_LIMIT` failed logins for one username from one
client address within `LOGIN_FAILURE_WINDOW` seconds, the form refuses to check any
password for that pair until the window ends, and says how long to wait (HTTP 429).
The counters live in Django's cache: Redis when REDIS_URL is set (shared by every
process), else per process memory. A successful login clears its counter.

Settings page (`/settings/`): the user's API tokens for non-browser clients (name,
hint, created, last used), creating one (the raw token is shown once, in the answer
to the POST, and never stored), revoking one, and today's use of hosted models.
"""
from __future__ import annotations

import hashlib
import math
import time

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.forms.forms import NON_FIELD_ERRORS
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from chat import quotas
from chat.models import ApiToken

MAX_TOKENS_PER_USER = 20


# --- Login throttle ---------------------------------------------------------------


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the entry of X-Forwarded-For that the
    nearest trusted proxy added (`TRUSTED_PROXY_COUNT` proxies append to it; entries
    further left are whatever the client sent, and can be forged)."""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR", "")


class LoginThrottle:
    """Failed logins of one (username, client address) pair in a fixed window."""

    def __init__(self, username: str, ip: str) -> None:
        digest = hashlib.sha256(f"{username.strip().casefold()}\0{ip}".encode()).hexdigest()
        self.count_key = f"login-failures:{digest}"
        self.until_key = f"login-failures-until:{digest}"

    def wait(self) -> int | None:
        """Seconds to wait before another try is checked, or None."""
        if cache.get(self.count_key, 0) < settings.LOGIN_FAILURE_LIMIT:
            return None
        until = cache.get(self.until_key)
        if until is None:
            return None
        return max(1, math.ceil(until - time.time()))

    def failed(self) -> None:
        window = settings.LOGIN_FAILURE_WINDOW
        cache.add(self.until_key, time.time() + window, window)
        cache.add(self.count_key, 0, window)
        try:
            cache.incr(self.count_key)
        except ValueError:  # expired between add and incr
            cache.set(self.count_key, 1, window)

    def clear(self) -> None:
        cache.delete_many([self.count_key, self.until_key])


def _wait_in_words(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class ThrottledAuthenticationForm(AuthenticationForm):
    """Refuses before checking the password while the throttle says wait."""

    wait: int | None = None

    def clean(self):
        if self.wait is not None:
            raise ValidationError(
                "Too many failed attempts to log in. Wait %(wait)s and try again.",
                code="throttled", params={"wait": _wait_in_words(self.wait)})
        return super().clean()


class ThrottledLoginView(LoginView):
    form_class = ThrottledAuthenticationForm

    def get_form(self, form_class=None):
        form = super().get_form(form_class)
        self.throttle = None
        if self.request.method == "POST":
            self.throttle = LoginThrottle(self.request.POST.get("username", ""), client_ip(self.request))
            form.wait = self.throttle.wait()
        return form

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "signup_open": settings.SIGNUP_OPEN}

    def form_valid(self, form):
        self.throttle.clear()
        return super().form_valid(form)

    def form_invalid(self, form):
        if form.has_error(NON_FIELD_ERRORS, "throttled"):
            return self.render_to_response(self.get_context_data(form=form), status=429)
        if form.has_error(NON_FIELD_ERRORS, "invalid_login"):
            self.throttle.failed()
        return super().form_invalid(form)


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's own login would not be throttled: send it to this one."""
    return redirect_to_login(request.GET.get("next") or reverse("admin:index"))


# --- Settings page: API tokens ------------------------------------------------------------


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, strip=True,
                           widget=forms.TextInput(attrs={"placeholder": "e.g. laptop terminal", "autocomplete": "off"}))


def _settings_page(request: HttpRequest, *, form: TokenForm | None = None, new_token: ApiToken | None = None,
                   raw_token: str | None = None, status: int = 200) -> HttpResponse:
    context = {
        "tokens": ApiToken.objects.filter(user=request.user).order_by("-created_at", "-pk"),
        "form": form or TokenForm(),
        "new_token": new_token,
        "raw_token": raw_token,
        "usage": quotas.usage(request.user),
        "max_tokens": MAX_TOKENS_PER_USER,
    }
    response = render(request, "chat/settings.html", context, status=status)
    if raw_token:
        response["Cache-Control"] = "no-store"  # the raw token must not outlive this page
    return response


@login_required
@require_GET
def settings_page(request: HttpRequest) -> HttpResponse:
    return _settings_page(request)


@login_required
@require_POST
def create_token(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if form.is_valid() and ApiToken.objects.filter(user=request.user).count() >= MAX_TOKENS_PER_USER:
        form.add_error(None, f"You can have at most {MAX_TOKENS_PER_USER} tokens. Revoke one first.")
    if not form.is_valid():
        return _settings_page(request, form=form, status=400)
    token, raw = ApiToken.issue(request.user, form.cleaned_data["name"])
    return _settings_page(request, new_token=token, raw_token=raw, status=201)


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    token = ApiToken.objects.filter(user=request.user, pk=token_id).first()
    if token is None:
        raise Http404("No such token")  # someone else's is indistinguishable from none
    token.delete()
    messages.success(request, f"Token “{token.name or token.key_hint + '…'}” revoked: clients using it are refused from now on.")
    return redirect("chat:settings")
