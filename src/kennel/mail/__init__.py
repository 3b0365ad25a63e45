"""The e-mail gateway: an SMTP listener that turns mail to workers into tasks."""
