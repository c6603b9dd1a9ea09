"""Foundation every layer may use: the one exception root and exit codes, file-writing safety, units, progress, 3.9 shims."""
