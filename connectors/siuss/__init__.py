"""Reading SIUSS flows (PS/PSA/SINA and SINBA), shared by the ``siuss_files`` and
``siuss_waas`` connectors. A library, not a plugin.

The official INPS XSDs in ``xsd/`` are © INPS, MIT licence (see ``xsd/LICENSE``).
"""
