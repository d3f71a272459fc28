from django.db import migrations, models


class Migration(migrations.Migration):
    """The checkpoint of a running reply (issue 15): a killed process loses at most its last beat."""

    dependencies = [
        ("chat", "0003_model_usage"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="reply_text",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="conversation",
            name="reply_seq",
            field=models.IntegerField(default=0),
        ),
    ]
