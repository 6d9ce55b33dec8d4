"""`herald receive`: a ready subscriber endpoint for trying Herald and for tests."""
