from django.urls import path

from chat import accounts, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.new_chat, name="new"),
    path("c/<str:conversation_id>/", views.conversation_page, name="conversation"),
    path("c/<str:conversation_id>/export.md", views.export_markdown, name="export_markdown"),
    path("c/<str:conversation_id>/export.json", views.export_json, name="export_json"),
    path("s/<str:token>/", views.shared_conversation, name="shared"),
    path("settings/", accounts.settings_page, name="settings"),
    path("settings/tokens/", accounts.create_token, name="create_token"),
    path("settings/tokens/<int:token_id>/revoke/", accounts.revoke_token, name="revoke_token"),
]
