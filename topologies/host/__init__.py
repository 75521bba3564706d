"""The app host: the Faust app, its web views and the dashboard's live state."""
