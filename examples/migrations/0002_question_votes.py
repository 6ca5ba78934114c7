from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("polls", "0001_initial")]
    operations = [migrations.AddField("question", "votes", models.IntegerField(default=0))]
