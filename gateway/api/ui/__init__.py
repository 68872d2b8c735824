"""``/freshet/ui``: the cost and traces pages."""
