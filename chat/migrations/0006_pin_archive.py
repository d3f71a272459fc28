from django.db import migrations, models


class Migration(migrations.Migration):
    """Pinned and archived conversations, and the nonce a share link is derived from (so it can be copied again)."""

    dependencies = [
        ("chat", "0005_account_preferences"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="pinned",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="conversation",
            name="archived",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="conversation",
            name="share_nonce",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
    ]
