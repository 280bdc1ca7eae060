"""Modbus probe: room sensors, leak cables, precision AC and contact modules read through
register maps kept as data (``maps/*.yaml``), over Modbus TCP, RTU on a serial port or RTU over TCP."""
