"""infertide: workers."""
