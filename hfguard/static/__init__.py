"""The static tier: evidence gathered without executing or fully loading anything."""
