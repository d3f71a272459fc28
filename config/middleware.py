"""Security headers Django 5.2 does not send by itself.

Content-Security-Policy (Django has no built-in CSP before 6.0) and Permissions-Policy,
from `settings.CONTENT_SECURITY_POLICY` and `settings.PERMISSIONS_POLICY`, on every
response; Cross-Origin-Opener-Policy too, should SecurityMiddleware not have set it.
A view that needs another policy sets the header itself: it is never overwritten.
"""
from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings


class SecurityHeadersMiddleware:
    """Sync and async capable, so that it never adds a thread hop under daphne."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        return self._add_headers(self.get_response(request))

    async def _acall(self, request):
        return self._add_headers(await self.get_response(request))

    @staticmethod
    def _add_headers(response):
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        if settings.PERMISSIONS_POLICY:
            response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            response.headers.setdefault("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY)
        return response
