"""One module per runbook command: its handler, help and everything of its Slack UI."""
