"""The agent gateway (issue 9): a WebSocket endpoint for agent desktops and supervisors, the
desktop and console pages it serves, signed tokens, and the agent roster in Redis."""
