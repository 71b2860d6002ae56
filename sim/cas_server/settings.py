"""Django settings of the test CAS server (django-mama-cas): tests and the demo only, never deployed.

Everything comes from the environment the launcher (sim/cas_server/__init__.py) sets: a private
SQLite file, the allowed service URL pattern, a random secret key.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ["JISHI_CAS_SECRET"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "mama_cas",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "sim.cas_server.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth",
                                       "django.contrib.messages.context_processors.messages"]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["JISHI_CAS_DB"]}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # test users only: fast start
MAMA_CAS_SERVICES = [{
    "SERVICE": os.environ["JISHI_CAS_SERVICE_PATTERN"],
    "CALLBACKS": ["mama_cas.callbacks.user_name_attributes", "sim.cas_server.attributes.email"],
}]
