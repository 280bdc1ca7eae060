"""SNMP: polling devices with profiles as data (probe.py), the trap receiver (traps.py) and the fast
v1/v2c transport (fastwalk.py), all behind the session interface in session.py."""
