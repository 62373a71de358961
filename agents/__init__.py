"""Agent-desktop client (Kafka) and simulated agents built on it."""
