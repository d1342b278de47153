"""Tasks of the shop app, found by ``app.autodiscover_tasks()``."""

from django.conf import settings
from proj.aqueue_app import app


@app.task
def greet(name: str) -> str:
    """A plain def task: runs in the worker's thread pool, so the ORM may be used here."""
    return f"{settings.SHOP_GREETING}, {name}!"
