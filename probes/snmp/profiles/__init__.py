"""Device profiles as data (one YAML file per profile); the schema and loader are in ../profile.py."""
