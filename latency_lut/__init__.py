"""latency_lut package (see DESIGN.md)."""
