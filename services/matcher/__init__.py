"""matcher: topic triggers and subscription filters turn changes into notification requests."""
