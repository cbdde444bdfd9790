"""Differential testing: random instruction blocks run on the real CPU and on an engine.

`generator` builds blocks with the iced-x86 encoder, `flags` works out which
flags the architecture leaves undefined, `native_side`/`engine_side` run a
block, `compare` diffs the outcomes and `report` prints them.
"""
