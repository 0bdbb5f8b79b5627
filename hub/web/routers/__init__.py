"""The web app's routes, one module per audience (see :func:`hub.web.app.create_app`)."""
