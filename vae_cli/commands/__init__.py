"""What each CLI command does, as plain functions a Python user can call too."""
