"""dispatcher: numbers events, keeps the event log, and delivers notifications."""
