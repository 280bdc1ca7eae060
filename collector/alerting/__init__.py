"""Alerting: rules over stored samples, topology-aware suppression, notifications, silences."""
