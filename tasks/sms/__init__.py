"""SMS text: phone numbers, segments and inbound keywords, as plain functions (no I/O)."""
