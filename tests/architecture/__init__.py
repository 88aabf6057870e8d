"""The house rules of DESIGN.md, checked on the source."""
