"""Format converters users run on their own files; each verifies what it wrote."""
