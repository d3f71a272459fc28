from django.urls import path

from chat import settings_page, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.new_chat, name="new"),
    path("c/<str:conversation_id>/", views.conversation_page, name="conversation"),
    path("c/<str:conversation_id>/export.md", views.export_markdown, name="export_markdown"),
    path("c/<str:conversation_id>/export.json", views.export_json, name="export_json"),
    path("s/<str:token>/", views.shared_conversation, name="shared"),
    path("settings/", settings_page.settings_page, name="settings"),
    path("settings/preferences/", settings_page.save_preferences, name="save_preferences"),
    path("settings/tokens/", settings_page.create_token, name="create_token"),
    path("settings/tokens/<int:token_id>/revoke/", settings_page.revoke_token, name="revoke_token"),
    path("settings/export.zip", settings_page.export_all, name="export_all"),
    path("settings/delete/", settings_page.delete_account, name="delete_account"),
]
