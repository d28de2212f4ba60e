"""AI triage (MONAI): reads new studies from the archive's outbox and writes SR/SEG back.

Not built yet; see the project's issues. It will stand on ``storage`` only.
"""
