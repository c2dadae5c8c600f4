"""Market data: provider clients, parsing, the consensus price, fetch services and schedules."""
