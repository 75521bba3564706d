"""The local runtime: a Kafka broker from jars (plain or SASL_SSL), a Ray cluster with the Serve app,
supervised Faust worker processes, and :class:`~infertide.local.stack.LocalStack`, which runs them all."""
