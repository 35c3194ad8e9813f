# The scripts here are run as programs by tests/oo/test_launcher.py, never imported.
collect_ignore = ["standin.py", "run_launcher.py"]
