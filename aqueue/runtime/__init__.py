"""The runtime: what a worker process does with the messages it reads.

- :mod:`.executor`: one message, decoded, checked, run, turned into an outcome (no Redis);
- :mod:`.worker`: the :class:`~.worker.Worker`, wiring the parts below and shutting down;
- :mod:`.fetching`, :mod:`.running`, :mod:`.finishing`, :mod:`.maintenance`: its four jobs;
- :mod:`.slots`: task slots, counters, backoff;
- :mod:`.monitor`: what ``aqueue inspect`` reads; :mod:`.metrics`: Prometheus and ``/healthz``.
"""
