"""Celery app module: `celery -A celery_tasks worker -P threads -c 100`."""

import os
import time

from celery import Celery
from common import THREAD_COUNTER

URL = os.environ["BENCH_REDIS_URL"]

app = Celery("bench", broker=URL, backend=URL)


@app.task
def noop() -> None:
    THREAD_COUNTER.hit()


@app.task
def sleepy() -> None:
    THREAD_COUNTER.mark_start()
    time.sleep(0.1)
    THREAD_COUNTER.hit()
