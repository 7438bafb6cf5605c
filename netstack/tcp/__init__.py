"""netstack/tcp package."""
