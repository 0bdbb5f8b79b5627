"""The web app of Raccordo (``raccordo serve``): pages, JSON API, accounts."""
