"""WSGI entry point for application servers (gunicorn mywebsite.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mywebsite.settings.staging")
application = get_wsgi_application()
