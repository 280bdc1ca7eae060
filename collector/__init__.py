"""netwatch collector: the centre — ingest, storage, inventory, alerting and control."""
