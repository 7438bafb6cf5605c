"""bootinit/scsi package."""
