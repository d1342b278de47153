"""Plain synchronous Django views: ``delay`` enqueues without an event loop."""

from django.http import HttpRequest, JsonResponse
from proj.aqueue_app import app

import aqueue
from aqueue.sync import sync_result

from .tasks import greet


def start_greeting(request: HttpRequest) -> JsonResponse:
    handle = greet.delay(request.GET.get("name", "world"))
    return JsonResponse({"task_id": handle.id})


def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    handle = sync_result(app, task_id)
    wait = float(request.GET.get("wait", "0"))
    try:
        value = handle.get(timeout=min(wait, 30.0)) if wait > 0 else None
    except aqueue.ResultTimeout:
        value = None
    except aqueue.TaskFailed as exc:
        return JsonResponse({"task_id": task_id, "status": "failed", "error": str(exc)})
    info = handle.info()
    return JsonResponse({"task_id": task_id, "status": info.status.value, "result": value})
