"""firmware_tables package."""
