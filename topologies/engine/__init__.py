"""The route engine: consume record batches, call the models through Serve, produce results, commit.

Where the delivery contract lives: :mod:`topologies.engine.consumer` (fetch and lifecycle),
:mod:`topologies.engine.ledger` (what may be committed, per partition) and
:mod:`topologies.engine.executor` (order and backpressure); :mod:`topologies.engine.consumer_watch` stops a
worker whose consumer call never returns rather than let its route stall.
"""
