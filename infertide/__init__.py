"""infertide: infertide."""
