"""Search methods. Each is a module with ``search(config, out)`` and ``resume(run_dir, **overrides)``."""
