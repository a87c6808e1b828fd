"""Stage 0: sources -> the feedback table (simulating observational feedback where asked)."""
