"""Built-in connector plugins, registered through the ``raccordo.plugins``
entry points exactly like third-party plugins."""
