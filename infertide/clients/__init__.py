"""Kafka clients for the CLI, the demo and the bench: topic admin, producers of input events, a topic reader."""
