"""Keys, limits, health and auth: in-process, or shared through Redis."""
