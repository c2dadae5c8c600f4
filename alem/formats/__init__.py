"""Date and number formats of languages whose formats Django does not ship.

Used through ``FORMAT_MODULE_PATH``."""
