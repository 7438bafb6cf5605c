"""qemu package."""
