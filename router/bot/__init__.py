"""The bot-first stage: every contact meets the bot; what it cannot close goes to a human queue."""
