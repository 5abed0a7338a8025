"""supernet package (see DESIGN.md)."""
