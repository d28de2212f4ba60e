"""AI triage (MONAI): models as pinned bundles, the chest X-ray model's input preparation.

The service that reads new studies from the archive's outbox and writes SR/SEG back is
still to come (see the project's issues). It stands on ``storage`` only.
"""
