"""The edge: store, bus, HTTP sender, settings, metrics, logging, process lifecycle."""
