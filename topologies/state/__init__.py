"""State folded from the routes' results: analytics windows, recommendations, totals."""
