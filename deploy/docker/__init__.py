"""Image build helpers: the dependency lock generator and the container health check."""
