"""Checks of Herald as it is deployed (wheel, image, compose, chart), run by `make deploy-check`."""
