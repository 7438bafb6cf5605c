"""bootinit/iscsi package."""
