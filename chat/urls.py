from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.new_chat, name="new"),
    path("c/<str:conversation_id>/", views.conversation_page, name="conversation"),
    path("c/<str:conversation_id>/export.md", views.export_markdown, name="export_markdown"),
    path("c/<str:conversation_id>/export.json", views.export_json, name="export_json"),
]
