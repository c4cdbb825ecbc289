"""Persistence: tables, repositories, migrations, the audit ledger's storage, settings, errors.

``models`` imports nothing else of ExecFlow's.
"""
