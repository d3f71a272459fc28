import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Account-wide custom instructions and default model (chat/preferences.py)."""

    dependencies = [
        ("chat", "0004_reply_checkpoint"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AccountPreferences",
            fields=[
                ("user", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                              related_name="chat_preferences", serialize=False,
                                              to=settings.AUTH_USER_MODEL)),
                ("custom_instructions", models.TextField(blank=True)),
                ("default_model", models.CharField(blank=True, max_length=200)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
    ]
