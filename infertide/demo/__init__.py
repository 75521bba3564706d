"""The demo: tiny local models (random weights, offline), sample data, and the run behind ``infertide demo``."""
