"""Views that tasks add to the app's pages; each page registers the ones it shows."""
