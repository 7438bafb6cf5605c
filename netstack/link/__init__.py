"""netstack/link package."""
