from django.conf import settings
from django.http import HttpResponse

from .models import Question


def instance(request):
    """Names the instance serving the request and counts its questions."""
    return HttpResponse(
        f"instance={settings.INSTANCE} questions={Question.objects.count()}\n",
        content_type="text/plain",
    )


def health(request):
    """200 when the code and its database agree: every column of the
    models is read, so a missing migration answers 500."""
    list(Question.objects.all()[:1])
    return HttpResponse("ok\n", content_type="text/plain")
