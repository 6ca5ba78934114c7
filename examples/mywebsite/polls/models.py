from django.db import models


class Question(models.Model):
    text = models.CharField(max_length=200)
    published = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.text
