from django.contrib import admin
from django.urls import include, path

from chat import views as chat_views
from chat.accounts import ThrottledLoginView, ThrottledPasswordChangeView, admin_login, signup

urlpatterns = [
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    path("healthz", chat_views.healthz, name="healthz"),
    path("accounts/signup/", signup, name="signup"),
    # Before the auth URLs: the login that throttles repeated failures (chat/accounts.py).
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/password_change/", ThrottledPasswordChangeView.as_view(), name="password_change"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("chat.urls")),
]
