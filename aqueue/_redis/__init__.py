"""The Redis adapter: the only part of aqueue that imports ``redis`` at run time.

- :mod:`.connection`: the one connection factory and the direct line for hot commands;
- :mod:`.broker`: every state change, one Lua script each;
- :mod:`.views`: reads that change nothing (queue figures, worker registry, lookups);
- :mod:`.scripts` and ``lua/``: the scripts and the helpers they share.
"""
