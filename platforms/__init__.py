"""Platforms: where pods run. `base` is the interface; `local` runs pods as processes."""
