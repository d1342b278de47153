"""Settings of the example project; aqueue reads every AQUEUE_* name here."""

import os

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
ROOT_URLCONF = "proj.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# aqueue: app.config_from_object("django.conf:settings", namespace="AQUEUE")
AQUEUE_REDIS_URL = os.environ.get("AQUEUE_REDIS_URL", "redis://localhost:6379/0")
AQUEUE_PREFIX = os.environ.get("AQUEUE_PREFIX", "shop")
AQUEUE_RESULT_TTL = 3600.0

SHOP_GREETING = "Hello"
