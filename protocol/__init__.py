"""The contract between an agent and the collector — the only code both sides import from each
other's world: ids and limits (`ids`), MQTT topics (`topics`), the batch envelope (`envelope`),
the status document (`status`), and MQTT connection settings with their TLS set-up (`mqtt`).
"""
