"""Runnable examples; ``tidings demo`` plays them."""
