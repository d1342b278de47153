"""The core: what aqueue is made of, with no I/O.

Errors, key names, task states and records, settings, the wire protocol
(envelope, codec, broker messages, push frames), the task context, argument
specs and the group-commit batcher. Every other layer builds on these; they
import nothing of aqueue's outside this package.
"""
