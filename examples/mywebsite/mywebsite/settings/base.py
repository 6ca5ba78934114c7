"""Settings shared by every instance of mywebsite."""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# An example project: a real site reads this from an env_file.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "polls",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "mywebsite.urls"
WSGI_APPLICATION = "mywebsite.wsgi.application"

# The database: PostgreSQL when MYWEBSITE_PG_HOST names its socket
# directory (or host), else SQLite in the instance's state directory,
# never in the (read-only) package.
if os.environ.get("MYWEBSITE_PG_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["MYWEBSITE_PG_HOST"],
            "NAME": os.environ.get("MYWEBSITE_PG_NAME", "mywebsite"),
            "USER": os.environ.get("MYWEBSITE_PG_USER", "postgres"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["MYWEBSITE_DB"],
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT")
STATICFILES_DIRS = [d for d in os.environ.get("DJANGO_STATICFILES_DIRS", "").split(":") if d]
MEDIA_URL = "media/"
MEDIA_ROOT = os.environ.get("DJANGO_MEDIA_ROOT", "")

INSTANCE = "unset"
