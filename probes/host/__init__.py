"""Host probe: the agent's own node — CPU, load, memory, swap, disks, interfaces, uptime, clock."""
