"""The dashboard: a page and its assets, served by the server itself (no CDN, no build)."""
