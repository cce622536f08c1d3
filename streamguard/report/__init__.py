"""Human- and machine-readable reports of scanned files (``streamguard scan``)."""
