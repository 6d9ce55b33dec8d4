"""Herald: an event-driven FHIR R4 Subscriptions broker."""

__version__ = "0.2.0"
