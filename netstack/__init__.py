"""netstack package."""
