"""bootinit package."""
