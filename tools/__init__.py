"""Maintenance tools for cmdrdata-autopatch (not shipped in the wheel).

They live outside the package because they reach the network and run on demand or on a schedule, never
as part of the library or of the normal test run.
"""
