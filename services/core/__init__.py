"""The domain, without I/O: resources, search semantics, topics, subscriptions, notifications."""
