"""Analytics over the store's activity: pure measures of activity, style interest and taste polarization."""
