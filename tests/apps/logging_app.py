"""A worker app whose task logs with ``extra=`` fields, for tests/test_json_logs.py."""

from __future__ import annotations

import logging

import aqueue

app = aqueue.App()
logger = logging.getLogger("logging_app")


@app.task(name="logging_app.charge")
async def charge(customer: str, cents: int) -> int:
    logger.info("charging %s", customer, extra={"customer": customer, "cents": cents})
    if cents < 0:
        raise ValueError("a charge can't be negative")
    return cents
