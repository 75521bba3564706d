"""infertide: topologies."""
