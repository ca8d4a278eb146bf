"""The read-only HTTP API (`journey-worker serve`): pages, exports and statistics over db/.

Its one job is HTTP: authentication, cursors, problem details, request ids. Every SQL statement
lives in db/ (pages.py, exports.py, stats.py); the API never writes journey state, and its
database sessions are READ ONLY to make sure of it.
"""
