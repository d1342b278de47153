"""The project's aqueue App, configured from Django settings.

Workers: ``DJANGO_SETTINGS_MODULE=proj.settings aqueue worker proj.aqueue_app:app``
"""

import aqueue

app = aqueue.App()
app.config_from_object("django.conf:settings", namespace="AQUEUE")
app.autodiscover_tasks()  # imports shop/tasks.py (and every installed app's tasks.py)
