"""Light command modules: click commands whose library code (and torch) is imported when they
run, so that ``pncd COMMAND --help`` answers without importing torch."""
