"""Accounts: throttled login, sign-up and password change, and the settings page.

Throttles (counters in Django's cache, chat/throttle.py: Redis when REDIS_URL is set,
shared by every process, else per process memory), each answering HTTP 429 with how
long to wait, before any password is checked:
- login: `LOGIN_FAILURE_LIMIT` failures per identity (the username as login resolves
  it, so look-alike spellings count together) and client address, and
  `LOGIN_FAILURE_LIMIT_PER_ADDRESS` per address, within `LOGIN_FAILURE_WINDOW`
  seconds. A successful login clears its identity's counter;
- password change: wrong old passwords per user, with the login's limit and window;
- sign-up: accounts, and "username taken" answers, per client address and `SIGNUP_WINDOW`.

Settings page (`/settings/`): the user's API tokens for non-browser clients (name,
hint, created, last used), creating one (the raw token is shown once, in the answer
to the POST, and never stored), revoking one, and today's use of hosted models.
"""
from __future__ import annotations

import math

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, UserCreationForm
from django.contrib.auth.views import LoginView, PasswordChangeView, redirect_to_login
from django.core.exceptions import ValidationError
from django.forms.forms import NON_FIELD_ERRORS
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import quotas
from chat.models import ApiToken
from chat.throttle import Throttle, identity, longest_wait

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
    """Failed logins per (identity, client address), and per client address alone.

    The identity is the username as login resolves it (NFKC, case folded: see
    chat/throttle.py `identity`), so look-alike spellings share one counter; the
    per-address counter stops one address from spraying guesses over many accounts.
    """

    def __init__(self, username: str, ip: str) -> None:
        window = settings.LOGIN_FAILURE_WINDOW
        self.pair = Throttle("login", f"{identity(username)}\0{ip}", settings.LOGIN_FAILURE_LIMIT, window)
        self.address = Throttle("login-address", ip, settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS, window)

    def wait(self) -> int | None:
        """Seconds to wait before another try is checked, or None."""
        return longest_wait(self.pair, self.address)

    def failed(self) -> None:
        self.pair.hit()
        self.address.hit()

    def clear(self) -> None:
        """A success forgives this identity's failures, not the address's."""
        self.pair.clear()


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


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """Refuses before checking the old password while the user's throttle says wait."""

    wait: int | None = None

    def clean_old_password(self):
        if self.wait is not None:
            raise ValidationError("Too many wrong passwords. Wait %(wait)s and try again.",
                                  code="throttled", params={"wait": _wait_in_words(self.wait)})
        return super().clean_old_password()


class ThrottledPasswordChangeView(PasswordChangeView):
    """A stolen session must not become a free password oracle: wrong old passwords
    count per user, with the login's limit and window."""

    form_class = ThrottledPasswordChangeForm

    def get_form(self, form_class=None):
        form = super().get_form(form_class)
        self.throttle = Throttle("password-change", str(self.request.user.pk), settings.LOGIN_FAILURE_LIMIT,
                                 settings.LOGIN_FAILURE_WINDOW)
        if self.request.method == "POST":
            form.wait = self.throttle.wait()
        return form

    def form_invalid(self, form):
        if form.has_error("old_password", "throttled"):
            return self.render_to_response(self.get_context_data(form=form), status=429)
        if form.has_error("old_password", "password_incorrect"):
            self.throttle.hit()
        return super().form_invalid(form)


# --- Sign-up ----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Sign-up, throttled per client address: `SIGNUP_LIMIT_PER_ADDRESS` accounts, and
    `SIGNUP_TAKEN_LIMIT_PER_ADDRESS` answers of "that username is taken" (which is how
    the form lets anyone learn that a username exists), per `SIGNUP_WINDOW`."""
    if not settings.SIGNUP_OPEN:
        return render(request, "registration/signup_closed.html", status=403)
    ip = client_ip(request)
    accounts = Throttle("signup", ip, settings.SIGNUP_LIMIT_PER_ADDRESS, settings.SIGNUP_WINDOW)
    probes = Throttle("signup-taken", ip, settings.SIGNUP_TAKEN_LIMIT_PER_ADDRESS, settings.SIGNUP_WINDOW)
    form = UserCreationForm(request.POST or None)
    if request.method == "POST":
        wait = longest_wait(accounts, probes)
        if wait is not None:
            refusal = f"Too many sign-ups from your network. Wait {_wait_in_words(wait)} and try again."
            return render(request, "registration/signup.html", {"form": UserCreationForm(), "refusal": refusal},
                          status=429)
        if form.is_valid():
            user = form.save()
            accounts.hit()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("chat:index")
        if form.has_error("username", "unique"):
            probes.hit()
    return render(request, "registration/signup.html", {"form": form})


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
