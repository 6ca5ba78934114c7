from django.conf import settings
from django.http import HttpResponse

from .models import Question


def instance(request):
    """Names the instance serving the request and counts its questions."""
    return HttpResponse(
        f"instance={settings.INSTANCE} questions={Question.objects.count()}\n",
        content_type="text/plain",
    )
