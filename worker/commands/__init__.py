"""Command groups of the journey-worker command line, one module per group."""
