"""The page of ``batch-engage serve`` in a real Chromium, driven by Playwright."""
