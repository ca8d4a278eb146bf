"""Send policy: tenant settings, the contact's time zone, quiet hours and frequency caps.

Plain functions over plain data (settings, contact, clock, counters), no I/O.
"""
