"""One router per resource under /api/v1, and the pages."""
