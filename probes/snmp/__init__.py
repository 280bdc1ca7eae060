"""SNMP: polling devices with profiles as data (probe.py), the trap receiver (traps.py), and the session
(session.py) over two transports: our BER fast path for v1/v2c (ber.py, fastwalk.py) and pysnmp
(pysnmp_session.py); connect.py picks one per device."""
