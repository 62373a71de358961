"""The routing stage: who answers which contact, kept atomically in Redis."""
